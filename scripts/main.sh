#!/usr/bin/env bash
# The main job, from a fresh clone on a fresh machine (Debian 12 with the
# Rust toolchain): installs what `kisumctl deploy local` runs (PostgreSQL,
# Redis, the mongoeco MongoDB-wire emulator: scripts/peers.sh runtime),
# builds kisumctl, checks the matrix and the committed manifests, then runs
# `kisumctl deploy local`, which builds the services (release), starts the
# whole platform under its supervisor and ends with the smoke checks.
#
# Exit 0 when every check passed. The platform keeps running afterwards:
# `target/release/kisumctl status local`, `... logs local auth`,
# `... down local [--purge]`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/peers.sh runtime
# shellcheck source=scripts/peers-env.sh
. scripts/peers-env.sh

cargo build --locked --release --quiet -p kisumctl
kisumctl=target/release/kisumctl

"$kisumctl" validate
"$kisumctl" render --check
"$kisumctl" deploy local
