#!/usr/bin/env bash
# Benchmark a cold `kisumctl deploy local` (nothing running, no state) up to
# its last check, with the services already built, and print the per-step
# breakdown of each run (not part of the test command).
#
# Usage: scripts/bench/deploy-local.sh
#   BENCH_RUNS (default 3) cold deploys, one after the other.
#   BENCH_BIN_DIR (default target/release, built first if missing) holds the
#   service binaries; kisumctl is target/release/kisumctl (built here).
#
# Each run deploys a scratch copy of environments/ with its state in a
# temporary directory and free loopback ports, so a platform already
# running from .kisum/local is not touched; `down --purge` ends every run
# (also on failure or Ctrl-C). Needs PostgreSQL, Redis and the mongoeco venv
# (`bash scripts/peers.sh`).
#
# The deploy's exit code is reported as-is (1 when a smoke check failed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT="$PWD"

RUNS="${BENCH_RUNS:-3}"
BIN_DIR="${BENCH_BIN_DIR:-$ROOT/target/release}"

cargo build --locked --release --quiet -p kisumctl
if [[ ! -x "$BIN_DIR/kisum-auth" ]]; then
    cargo build --locked --release --quiet -p kisum-core -p kisum-auth -p kisum-module -p kisum-admin
fi
kisumctl="$ROOT/target/release/kisumctl"
export KISUM_MONGOECO_PYTHON="${KISUM_MONGOECO_PYTHON:-$ROOT/.peers/venv-mongoeco/bin/python}"

# A free port (or, with an argument, the first of 18 free service ports
# base + offset) below the ephemeral range, printed.
free_port() {
    python3 - "$@" <<'PY'
import random, socket, sys
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
bases = [8101, 8102, 8103, 8111, 8112, 8113, 8114, 8115, 8116,
         9101, 9102, 9103, 9111, 9112, 9113, 9114, 9115, 9116]
for _ in range(1000):
    if len(sys.argv) > 1:
        offset = random.randrange(12000, 22000)
        if all(free(b + offset) for b in bases):
            print(offset); break
    else:
        port = random.randrange(10000, 20000)
        if free(port):
            print(port); break
PY
}

SCRATCH="$(mktemp -d /tmp/kisum-bench-deploy-XXXXXX)"
# As root, PostgreSQL runs as the postgres user, which must enter the directory.
chmod 755 "$SCRATCH"
cleanup() {
    "$kisumctl" --matrix "$SCRATCH/environments" down local --purge >/dev/null 2>&1 || true
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

cp -r environments "$SCRATCH/"
sed -i \
    -e "s/port: 25432/port: $(free_port)/" \
    -e "s/port: 26379/port: $(free_port)/" \
    -e "s/port: 27117/port: $(free_port)/" \
    -e "s/port-offset: 20000/port-offset: $(free_port services)/" \
    "$SCRATCH/environments/local.yaml"

for run in $(seq 1 "$RUNS"); do
    "$kisumctl" --matrix "$SCRATCH/environments" down local --purge >/dev/null 2>&1 || true
    start=$(date +%s%N)
    code=0
    "$kisumctl" --matrix "$SCRATCH/environments" deploy local --bin-dir "$BIN_DIR" \
        >"$SCRATCH/out.txt" 2>"$SCRATCH/err.txt" || code=$?
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    printf '\n== run %s: %d.%03d s wall, exit %s\n' "$run" $((ms / 1000)) $((ms % 1000)) "$code"
    sed -n '/^STEP/,/^total/p' "$SCRATCH/out.txt"
    if [[ $code -ne 0 && $code -ne 1 ]]; then
        tail -n 20 "$SCRATCH/err.txt" >&2
        exit "$code"
    fi
done
