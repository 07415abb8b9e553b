#!/usr/bin/env bash
# Benchmark `kisumctl render` (all environments) against `kubectl kustomize`
# over the very manifests kisumctl rendered, side by side in one hyperfine run.
#
# Usage: scripts/bench/render.sh
#   BENCH_WARMUP (default 3) and BENCH_RUNS (default 30) tune hyperfine;
#   BENCH_JSON=PATH keeps a copy of hyperfine's JSON export (the temp dir
#   holding the original is removed on exit).
#
# Prints the mean of each side and, on its last line,
#   ratio kisumctl/kustomize = R (target <= 1.0)
#
# What is compared
#   (a) kisumctl: `kisumctl render --out DIR` of every environment in the
#       matrix (environments/, read relative to the repo root, so the timed
#       command runs from there). Each run starts from an empty DIR (hyperfine
#       --prepare removes it, untimed): kisumctl skips files whose content is
#       already on disk, so re-rendering into a warm DIR would time less work
#       than the first render does.
#   (b) kustomize: ONE `kubectl kustomize` over a top-level kustomization whose
#       resources are the four rendered env directories (copied into a temp dir
#       first, so kustomize reads exactly what kisumctl wrote), writing its
#       output to a file with -o so both sides persist their result.
#
#   Why one top-level kustomization rather than four chained invocations:
#   kisumctl renders the four environments in one process, so it pays process
#   start-up once. One kubectl process over a top-level kustomization also pays
#   start-up once (kubectl is a large Go binary, and the gcloud kubectl
#   dispatcher adds a server-version probe on each start), and needs no shell
#   to chain commands, so hyperfine can exec both commands directly (-N).
#   Four chained invocations would charge kustomize four start-ups plus a
#   shell and flatter kisumctl's ratio; the single invocation is the stricter,
#   fairer baseline. Its only extra work (merging four sub-builds, checking
#   resource ids across them) is small compared with parsing the files.
#
# Before timing, the script checks that the kustomize build succeeds and yields
# the same objects, counted per kind, as kisumctl rendered (a `kind:` line at
# column 0 marks one object on each side); it fails loudly otherwise.
#
# kubectl kustomize reads local files only. The gcloud kubectl dispatcher
# nevertheless probes the API server named in the kubeconfig to choose a
# kubectl version; KUBECONFIG points at an empty file so that probe can only
# target the default loopback address and never a real cluster.
set -euo pipefail

warmup=${BENCH_WARMUP:-3}
runs=${BENCH_RUNS:-30}

die() {
    echo "render.sh: error: $*" >&2
    exit 1
}

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo_root"

# --- tools -----------------------------------------------------------------
need_apt=()
command -v hyperfine >/dev/null 2>&1 || need_apt+=(hyperfine)
command -v jq >/dev/null 2>&1 || need_apt+=(jq)
if ((${#need_apt[@]} > 0)); then
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root or sudo to install: ${need_apt[*]}"
        sudo=(sudo)
    fi
    echo "installing ${need_apt[*]} with apt" >&2
    "${sudo[@]}" apt-get update
    "${sudo[@]}" apt-get install -y "${need_apt[@]}"
fi
command -v kubectl >/dev/null 2>&1 || die "kubectl not found on PATH"
command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH"

# --- build -----------------------------------------------------------------
echo "building release binary" >&2
cargo build --release
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$repo_root/$target_dir
bin=$target_dir/release/kisumctl
[[ -x $bin ]] || die "release binary not found at $bin"

# --- temp dirs -------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/kisumctl-bench-XXXXXX")
cleanup() { rm -rf -- "$work"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

: >"$work/kubeconfig-empty"
export KUBECONFIG=$work/kubeconfig-empty

ref=$work/rendered       # kisumctl's output, rendered once, untimed
kdir=$work/kustomize     # the copy kustomize reads
out=$work/out            # kisumctl's output dir while timing
kout=$work/kustomize-out.yaml
json=$work/hyperfine.json

# --- inputs for kustomize, and the equal-work check ------------------------
"$bin" render --out "$ref" >/dev/null 2>"$work/render.log" ||
    { cat "$work/render.log" >&2; die "kisumctl render failed"; }

envs=()
for dir in "$ref"/*/; do
    [[ -f $dir/kustomization.yaml ]] && envs+=("$(basename "$dir")")
done
((${#envs[@]} == 4)) || die "expected 4 rendered environments, found ${#envs[@]}: ${envs[*]}"

mkdir -p "$kdir"
{
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources:"
    for env in "${envs[@]}"; do
        cp -R "$ref/$env" "$kdir/$env"
        echo "- $env"
    done
} >"$kdir/kustomization.yaml"

# Objects kisumctl rendered: `kind:` at column 0 in every file an env's
# kustomization lists (not the kustomization itself).
kinds_rendered=$work/kinds-rendered.txt
for env in "${envs[@]}"; do
    mapfile -t files < <(sed -n 's/^- \(.*\.yaml\)$/\1/p' "$ref/$env/kustomization.yaml")
    ((${#files[@]} > 0)) || die "$env/kustomization.yaml lists no resources"
    for file in "${files[@]}"; do
        [[ -f $ref/$env/$file ]] || die "$env/kustomization.yaml lists missing $file"
        grep '^kind:' "$ref/$env/$file" || true
    done
done | sort | uniq -c >"$kinds_rendered"

kubectl kustomize "$kdir" -o "$kout" 2>"$work/kustomize.log" ||
    { cat "$work/kustomize.log" >&2; die "kubectl kustomize $kdir failed"; }
kinds_built=$work/kinds-built.txt
{ grep '^kind:' "$kout" || true; } | sort | uniq -c >"$kinds_built"

count() { awk '{ n += $1 } END { print n + 0 }' "$1"; }
n_rendered=$(count "$kinds_rendered")
n_built=$(count "$kinds_built")
if ((n_rendered == 0)) || ! cmp -s "$kinds_rendered" "$kinds_built"; then
    echo "objects per kind, kisumctl (left) vs kubectl kustomize (right):" >&2
    diff -y "$kinds_rendered" "$kinds_built" >&2 || true
    die "kustomize build is not equal work: $n_rendered objects rendered, $n_built built"
fi
echo "equal work: ${#envs[@]} environments (${envs[*]}), $n_rendered objects on both sides" >&2
rm -f -- "$kout"

# --- timing ----------------------------------------------------------------
# -N: no intermediate shell; both commands are exec'd directly by hyperfine.
q() { printf '%q' "$1"; }
cmd_kisumctl="$(q "$bin") render --out $(q "$out")"
cmd_kustomize="kubectl kustomize $(q "$kdir") -o $(q "$kout")"
echo "timed (cwd $repo_root):" >&2
echo "  kisumctl:  $cmd_kisumctl" >&2
echo "  kustomize: $cmd_kustomize" >&2
echo "  prepare (untimed, before every run of both): rm -rf $(q "$out")" >&2

hyperfine -N \
    --warmup "$warmup" --runs "$runs" \
    --prepare "rm -rf $(q "$out")" \
    --export-json "$json" \
    -n kisumctl "$cmd_kisumctl" \
    -n kustomize "$cmd_kustomize"

[[ -z ${BENCH_JSON:-} ]] || cp -- "$json" "$BENCH_JSON"

stat_of() { jq -r --arg name "$1" --arg field "$2" '.results[] | select(.command == $name) | .[$field]' "$json"; }
mean_a=$(stat_of kisumctl mean)
sd_a=$(stat_of kisumctl stddev)
mean_b=$(stat_of kustomize mean)
sd_b=$(stat_of kustomize stddev)
[[ -n $mean_a && -n $mean_b ]] || die "could not read means from $json"

awk -v a="$mean_a" -v sa="$sd_a" -v b="$mean_b" -v sb="$sd_b" 'BEGIN {
    printf "mean kisumctl  = %.2f ms ± %.2f ms\n", a * 1000, sa * 1000
    printf "mean kustomize = %.2f ms ± %.2f ms\n", b * 1000, sb * 1000
    printf "ratio kisumctl/kustomize = %.2f (target <= 1.0)\n", a / b
}'
