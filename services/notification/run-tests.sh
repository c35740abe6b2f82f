#!/usr/bin/env bash
# Runs the notification service's tests: prepares its environment and stubs, runs the unit,
# storage (SQLite and the machine's Redis), process and JetStream suites, then the mesh suite
# against the real Rust services under clients/with-mesh.sh (which starts and stops them).
# Needs Redis on 127.0.0.1:6379 and NATS with JetStream on 127.0.0.1:4222, as `make test-nats`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${BOOKMESH_NOTIFICATION_VENV:-$root/.tools/notification-venv}
gen=${BOOKMESH_NOTIFICATION_GEN:-$root/.tools/notification-gen}

"$here/prepare.sh"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "notification: the tests need Python 3.11 (see above)" >&2
  exit 1
fi
export PYTHONPATH="$gen:$here"
export BOOKMESH_NOTIFICATION_GEN="$gen"
cd "$here"
"$venv/bin/python" -m pytest -q -m "not mesh" tests
"$root/clients/with-mesh.sh" "$venv/bin/python" -m pytest -q -m mesh tests
