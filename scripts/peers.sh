#!/usr/bin/env bash
# Installs the test peers kisumctl's test suite needs, into <repo>/.peers/.
#
#   scripts/peers.sh            # idempotent; a re-run with everything present
#                               # makes no network call and takes well under 1 s
#   scripts/peers.sh runtime    # only what `kisumctl deploy local` runs:
#                               # postgresql, redis-server, the mongoeco venv
#                               # (what scripts/main.sh needs; no moto,
#                               # kubernetes-validate, checkov or pebble)
#   . scripts/peers-env.sh      # exports KISUM_* paths to the installed tools
#
# What it installs:
#   .peers/venv-kv       PyPI kubernetes-validate  (schemas, `--strict -k 1.33.0`)
#   .peers/venv-checkov  PyPI checkov              (own venv: it downgrades boto3)
#   .peers/venv-mongoeco PyPI mongoeco[wire]       (MongoDB wire emulator; needs
#                        Python >= 3.13; started by scripts/mongoeco-launcher.py)
#   .peers/venv-moto     PyPI moto[server]         (S3 and Route53 emulator for
#                        the backup store and dns/tls tests:
#                        `moto_server -H 127.0.0.1 -p PORT`)
#   Debian postgresql, redis-server                (started per test by the
#                                                   kisum-testkit crate)
#   Debian prometheus                              (`promtool check rules` on the
#                                                   rendered alert rules)
#   Debian pebble                                  (ACME test CA: `pebble` and
#                                                   `pebble-challtestsrv`, started
#                                                   per test by tests/cli/tls.rs)
# Debian packages go through ensure_apt, which installs only what is missing.
#
# Environment:
#   KISUM_PYTHON      interpreter used to create the venvs (default: first of
#                     python3, /usr/bin/python3 that can create a venv)
#   KISUM_PYTHON313   Python 3.13 interpreter for the mongoeco venv (default:
#                     /root/.pyenv/versions/3.13.0/bin/python3.13)
#
# All progress goes to stderr; stdout stays empty. Exit 0 on success; on a
# failure, the message names the package and the command to retry, and the
# full installer output is in .peers/logs/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="$ROOT/.peers"
LOGS="$PEERS/logs"
SELF="scripts/peers.sh"

# Pinned versions. Changing a pin makes the next run rebuild that venv.
KUBERNETES_VALIDATE_SPEC="kubernetes-validate==1.37.0"
CHECKOV_SPEC="checkov==3.3.30"
MONGOECO_SPEC="mongoeco[wire]==4.11.0"
MOTO_SPEC="moto[server]==5.2.*"
PYTHON313_DEFAULT="/root/.pyenv/versions/3.13.0/bin/python3.13"

say() { printf 'peers: %s\n' "$*" >&2; }
die() { printf 'peers: ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- apt ------
APT_UPDATED=0

apt_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $* (no sudo found)"
    fi
}

# ensure_apt PKG...: installs the Debian packages that are not installed yet.
# Runs `apt-get update` at most once per invocation, and only if something
# has to be installed.
ensure_apt() {
    local missing=() pkg
    for pkg in "$@"; do
        apt_installed "$pkg" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0

    mkdir -p "$LOGS"
    local log="$LOGS/apt.log"
    if [[ $APT_UPDATED -eq 0 ]]; then
        say "apt-get update"
        if ! as_root apt-get update >>"$log" 2>&1; then
            tail -n 20 "$log" >&2
            die "apt-get update failed (log: $log); retry: apt-get update && bash $ROOT/$SELF"
        fi
        APT_UPDATED=1
    fi
    say "apt-get install ${missing[*]}"
    if ! as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q "${missing[@]}" >>"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "apt package(s) '${missing[*]}' failed to install (log: $log); retry: apt-get install -y ${missing[*]} && bash $ROOT/$SELF"
    fi
}

# ------------------------------------------------------------- python ------
PYTHON=""

# Sets PYTHON to an interpreter that can create a venv with pip in it.
# Called only when a venv has to be built, so a no-op re-run never pays for it.
# Default: `python3` on PATH (pyenv's CPython 3.11 on these machines), else
# Debian's /usr/bin/python3, whose venv support is the python3-venv package.
pick_python() {
    [[ -n $PYTHON ]] && return 0
    local c exe
    if [[ -n ${KISUM_PYTHON:-} ]]; then
        "$KISUM_PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
            || die "KISUM_PYTHON=$KISUM_PYTHON cannot create a venv (no venv/ensurepip module)"
        PYTHON="$KISUM_PYTHON"
        return 0
    fi
    for c in python3 /usr/bin/python3; do
        command -v "$c" >/dev/null 2>&1 || continue
        exe=$("$c" -c 'import sys; print(sys.executable)' 2>/dev/null) || continue
        [[ -n $exe ]] || continue
        if [[ $exe == /usr/bin/* ]]; then
            # Debian's python imports ensurepip fine but cannot run it
            # without python3-venv.
            ensure_apt python3-venv
        elif ! "$exe" -c 'import venv, ensurepip' 2>/dev/null; then
            continue
        fi
        PYTHON="$exe"
        return 0
    done
    die "no python3 found; retry: apt-get install -y python3 python3-venv && bash $ROOT/$SELF"
}

# Checks that the mongoeco venv's interpreter ($KISUM_PYTHON313, or pyenv's
# CPython 3.13.0) exists and is >= 3.13 with venv support, and prints it.
# Called only when that venv has to be built.
python313() {
    local py="${KISUM_PYTHON313:-$PYTHON313_DEFAULT}"
    if [[ ! -x $py ]]; then
        die "mongoeco needs Python >= 3.13, and $py does not exist; install CPython 3.13 (pyenv's 3.13.0 lives at $PYTHON313_DEFAULT) or point KISUM_PYTHON313 at a python3.13 interpreter, then retry: bash $ROOT/$SELF"
    fi
    "$py" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 13))' 2>/dev/null \
        || die "$py is not a Python >= 3.13 that can create a venv (mongoeco needs one); set KISUM_PYTHON313 to one and retry: bash $ROOT/$SELF"
    printf '%s\n' "$py"
}

# ensure_venv DIR SPEC BIN [PYTHON]: makes sure DIR is a venv with SPEC
# installed and DIR/bin/BIN present, built with PYTHON (default: pick_python).
# PYTHON may also be a function name that prints the interpreter, so that it is
# only looked for when the venv has to be built. The fast path checks a stamp
# file and the binary only: no interpreter start, no pip, no network.
ensure_venv() {
    local dir="$1" spec="$2" bin="$3" want_py="${4:-}"
    local name stamp log
    name="$(basename "$dir")"
    stamp="$dir/.kisum-spec"
    # bin/python is a symlink to the base interpreter: -e also catches a venv
    # whose interpreter has gone away.
    if [[ -x "$dir/bin/$bin" && -e "$dir/bin/python" && -f "$stamp" \
            && "$(<"$stamp")" == "$spec" ]]; then
        return 0
    fi

    local py
    if [[ -z $want_py ]]; then
        pick_python
        py="$PYTHON"
    elif declare -F "$want_py" >/dev/null; then
        py="$("$want_py")" || exit 1
    else
        py="$want_py"
    fi
    mkdir -p "$LOGS"
    log="$LOGS/$name.log"
    : >"$log"
    local retry="bash $ROOT/$SELF"

    # A venv without a matching stamp is half-built or out of date: start over.
    rm -rf "$dir"
    say "$name: creating venv ($("$py" -c 'import platform; print(platform.python_version())') at $py)"
    if ! "$py" -m venv "$dir" >>"$log" 2>&1; then
        tail -n 20 "$log" >&2
        rm -rf "$dir"
        die "$name: could not create the venv (log: $log); retry: $retry"
    fi

    local t0=$SECONDS
    say "$name: pip install $spec"
    if ! "$dir/bin/python" -m pip install --disable-pip-version-check --no-input \
            --progress-bar off "$spec" >>"$log" 2>&1; then
        tail -n 20 "$log" >&2
        rm -rf "$dir"
        die "$name: pip install '$spec' failed (log: $log); retry: $retry"
    fi
    if [[ ! -x "$dir/bin/$bin" ]]; then
        rm -rf "$dir"
        die "$name: '$spec' installed but $dir/bin/$bin is missing; retry: $retry"
    fi
    printf '%s' "$spec" >"$stamp"
    say "$name: ok ($((SECONDS - t0)) s)"
}

# --------------------------------------------------------------- main ------
main() {
    mkdir -p "$PEERS"

    # Two runs at once (say, parallel CI steps) would build the same venv twice.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$PEERS/.lock"
        flock 9
    fi

    local what="${1:-all}"
    case "$what" in
        all | runtime) ;;
        *) die "unknown argument '$what' (expected: runtime, or nothing for everything)" ;;
    esac
    if [[ $what == all ]]; then
        ensure_venv "$PEERS/venv-kv" "$KUBERNETES_VALIDATE_SPEC" kubernetes-validate
        ensure_venv "$PEERS/venv-checkov" "$CHECKOV_SPEC" checkov
    fi
    ensure_venv "$PEERS/venv-mongoeco" "$MONGOECO_SPEC" python python313
    # moto stands in for S3, Secrets Manager and Route53 in the tests only:
    # nothing `scripts/main.sh` runs talks to it.
    if [[ $what == all ]]; then
        ensure_venv "$PEERS/venv-moto" "$MOTO_SPEC" moto_server
    fi

    # Servers the integration tests start on loopback (kisum-testkit) and
    # `kisumctl deploy local` runs.
    ensure_apt postgresql redis-server

    # The ACME test CA and its DNS/HTTP challenge server (the tls tests).
    if [[ $what == all ]]; then
        ensure_apt pebble
    fi

    # promtool (Debian `prometheus`): `promtool check rules` on the
    # rendered PrometheusRule objects (tests/cli/manifests.rs).
    if [[ $what == all ]]; then
        ensure_apt prometheus
    fi

    # kubectl (benchmarks only) is expected on the machine; not installed here.
    command -v kubectl >/dev/null 2>&1 || say "note: kubectl not on PATH (only benchmarks use it)"

    say "all peers present in $PEERS"
}

# Sourcing this file (`. scripts/peers.sh`) defines ensure_apt and friends
# without installing anything.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
