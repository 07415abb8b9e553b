#!/usr/bin/env bash
# The main job, from a fresh clone on a fresh machine. Until
# `kisumctl deploy local` exists, it builds kisumctl, validates the matrix
# of every environment and checks that the committed manifests are what
# the matrix renders. Exit 0 on the shipped matrix.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --locked --quiet
kisumctl=target/debug/kisumctl

"$kisumctl" validate
"$kisumctl" render --check
"$kisumctl" inventory production --table environments
