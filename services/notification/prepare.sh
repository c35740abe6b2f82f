#!/usr/bin/env bash
# Prepares the notification service (Python), and nothing else: its virtual environment at
# .tools/notification-venv from requirements.lock (made again when the lock changes), and its
# stubs generated from proto/ into .tools/notification-gen (again when a contract changes),
# both git-ignored. `make run` calls it before starting the mesh; run.sh and run-tests.sh too.
#
# Without Python 3.11 (or its venv module) it says so and exits 0: the mesh then starts the
# Rust services alone. BOOKMESH_NOTIFICATION_VENV, BOOKMESH_NOTIFICATION_GEN and PYTHON
# override the locations and the interpreter.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${BOOKMESH_NOTIFICATION_VENV:-$root/.tools/notification-venv}
gen=${BOOKMESH_NOTIFICATION_GEN:-$root/.tools/notification-gen}
python=${PYTHON:-python3}

skip() {
  echo "notification: $1: the notification service is not prepared; the Rust services run without it" >&2
  exit 0
}
command -v "$python" >/dev/null 2>&1 || skip "python3 not found (it needs Python 3.11 or newer)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
  skip "$("$python" --version 2>&1) is older than 3.11"
"$python" -c 'import ensurepip, venv' 2>/dev/null || skip "Python's venv module is missing (apt-get install python3-venv)"

# One preparation at a time (the launcher and a test run may both ask).
mkdir -p "$root/.tools"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$root/.tools/notification-prepare.lock"
  flock 9
fi

# The environment, from the lock file; the stamp is written last, so an interrupted install is
# done again next time.
lock_sum=$(sha256sum "$here/requirements.lock" | cut -d' ' -f1)
stamp="$venv/.requirements.lock.sha256"
if [[ ! -x "$venv/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$lock_sum" ]]; then
  echo "notification: installing its Python environment from requirements.lock into $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.lock"
  echo "$lock_sum" >"$stamp"
fi

# The stubs, from the contracts (never copied), by the Python client's generator.
proto_sum=$(
  cd "$root"
  {
    find proto -name '*.proto' -print0 | sort -z | xargs -0 sha256sum
    sha256sum clients/python/generate.sh
    echo "$lock_sum"
  } | sha256sum | cut -d' ' -f1
)
gen_stamp="$gen/.proto.sha256"
if [[ ! -f "$gen_stamp" || "$(cat "$gen_stamp")" != "$proto_sum" ]]; then
  fresh=$(mktemp -d "$root/.tools/notification-gen.XXXXXX")
  PYTHON="$venv/bin/python" "$root/clients/python/generate.sh" "$fresh" >/dev/null
  echo "$proto_sum" >"$fresh/.proto.sha256"
  rm -rf "$gen"
  mv "$fresh" "$gen"
  chmod 755 "$gen"
  echo "notification: generated its stubs from proto/ into $gen" >&2
fi
