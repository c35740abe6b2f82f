#!/usr/bin/env bash
# Runs the notification service: prepares its environment and stubs (prepare.sh, quick when
# nothing changed), then replaces itself with `python -m bookmesh_notification`, so signals
# (SIGTERM: drain) reach the service itself. Settings come from the environment
# (services/notification/README.md); the launcher of `make run` passes the mesh's.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${BOOKMESH_NOTIFICATION_VENV:-$root/.tools/notification-venv}
gen=${BOOKMESH_NOTIFICATION_GEN:-$root/.tools/notification-gen}

"$here/prepare.sh"
if [[ ! -x "$venv/bin/python" || ! -d "$gen/bookmesh" ]]; then
  echo "notification: cannot start without its Python environment (see above)" >&2
  exit 1
fi
export PYTHONPATH="$gen:$here${PYTHONPATH:+:$PYTHONPATH}"
exec "$venv/bin/python" -m bookmesh_notification "$@"
