#!/usr/bin/env bash
# Runs the Python client's test suite against the real mesh: installs the locked dependencies,
# generates the client from proto/ into a temporary folder, and runs pytest with the services
# started as `make run` does.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
venv="$root/.tools/pyclient"
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r clients/python/requirements.lock
generated=$(mktemp -d)
trap 'rm -rf "$generated"' EXIT
PYTHON="$venv/bin/python" clients/python/generate.sh "$generated"
PYTHONPATH="$generated:$root/clients/python" clients/with-mesh.sh \
  "$venv/bin/python" -m pytest -q clients/python/tests
