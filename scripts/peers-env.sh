# shellcheck shell=bash
# Source this file from bash:  . scripts/peers-env.sh
# Exports the absolute paths of the test peers that scripts/peers.sh installs
# under <repo>/.peers/. It installs nothing and does not check that they
# exist: run scripts/peers.sh first.
_kisum_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

export KISUM_KUBERNETES_VALIDATE="$_kisum_root/.peers/venv-kv/bin/kubernetes-validate"
export KISUM_CHECKOV="$_kisum_root/.peers/venv-checkov/bin/checkov"
# Python of the mongoeco venv; runs scripts/mongoeco-launcher.py.
export KISUM_MONGOECO_PYTHON="$_kisum_root/.peers/venv-mongoeco/bin/python"
# moto's server (S3 for the backup store tests, Route53 for dns and tls).
export KISUM_MOTO_SERVER="$_kisum_root/.peers/venv-moto/bin/moto_server"
# The ACME test CA and its challenge server (Debian package `pebble`).
export KISUM_PEBBLE="${KISUM_PEBBLE:-$(command -v pebble || echo /usr/bin/pebble)}"
export KISUM_PEBBLE_CHALLTESTSRV="${KISUM_PEBBLE_CHALLTESTSRV:-$(command -v pebble-challtestsrv || echo /usr/bin/pebble-challtestsrv)}"
# promtool of the Debian package `prometheus` (checks the rendered alert rules).
export KISUM_PROMTOOL="${KISUM_PROMTOOL:-$(command -v promtool || echo /usr/bin/promtool)}"

unset _kisum_root
