#!/usr/bin/env bash
# Runs the Python client's test suite against the real mesh: installs the locked dependencies,
# generates the client from proto/ into a temporary folder, starts the services as `make run`
# does (on their default ports), runs pytest, and stops the services.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
venv="$root/.tools/pyclient"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r clients/python/requirements.lock

work=$(mktemp -d)
launcher_pid=""
cleanup() {
  if [[ -n "$launcher_pid" ]]; then
    kill -TERM "$launcher_pid" 2>/dev/null || true
    wait "$launcher_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

PYTHON="$venv/bin/python" clients/python/generate.sh "$work/generated"

target_dir=$(cargo metadata --format-version 1 --no-deps | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
"$target_dir/debug/bookmesh-launcher" --data-dir "$work/data" >"$work/launcher.log" 2>&1 &
launcher_pid=$!
deadline=$((SECONDS + 90))
until grep -q "bookmesh is up" "$work/launcher.log"; do
  if ! kill -0 "$launcher_pid" 2>/dev/null || ((SECONDS > deadline)); then
    tail -n 40 "$work/launcher.log" >&2
    echo "the mesh did not start" >&2
    exit 1
  fi
  sleep 0.2
done

PYTHONPATH="$work/generated:$root/clients/python" "$venv/bin/python" -m pytest -q clients/python/tests
