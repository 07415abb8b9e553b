#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a fresh machine: installs the
# peers the tests talk to (scripts/peers.sh), then runs every test of the
# workspace. Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/peers.sh
# shellcheck source=scripts/peers-env.sh
. scripts/peers-env.sh

cargo test --workspace --locked "$@"
