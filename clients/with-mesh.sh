#!/usr/bin/env bash
# Runs a command against the real mesh: starts the services as `make run` does (default ports,
# SQLite in a temporary folder, mTLS with the local PKI under data/pki), waits until all are
# SERVING, runs the command with the credentials a client needs in its environment
# (BOOKMESH_CA, a librarian's BOOKMESH_TOKEN, BOOKMESH_PKI_DIR, the token tool), stops them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
launcher_pid=""
stop_mesh() {
  if [[ -n "$launcher_pid" ]]; then
    kill -TERM "$launcher_pid" 2>/dev/null || true
    wait "$launcher_pid" 2>/dev/null || true
    launcher_pid=""
  fi
}
trap 'stop_mesh; rm -rf "$work"' EXIT

target_dir=$(cd "$root" && cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

# The default ports lie in Linux's ephemeral range, so a passing outgoing connection can hold
# one for a moment: wait for them to be free, and try a second time if the start still fails.
ports_free() {
  for port in 50051 50052 50053 50054 50055 8080; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 1; fi
  done
}
start_mesh() {
  local deadline=$((SECONDS + 30))
  until ports_free; do
    ((SECONDS < deadline)) || { echo "ports 50051-50055 and 8080 stay busy" >&2; return 1; }
    sleep 0.5
  done
  rm -rf "$work/data"
  "$target_dir/debug/bookmesh-launcher" --data-dir "$work/data" --pki-dir "$root/data/pki" \
    >"$work/launcher.log" 2>&1 &
  launcher_pid=$!
  deadline=$((SECONDS + 150))
  until grep -q "bookmesh is up" "$work/launcher.log"; do
    if ! kill -0 "$launcher_pid" 2>/dev/null || ((SECONDS > deadline)); then
      # The launcher's own lines and the services' errors, without backtraces.
      grep -vE '^\s+([0-9]+: |at )' "$work/launcher.log" | tail -n 40 >&2
      cp "$work/launcher.log" "${TMPDIR:-/tmp}/bookmesh-launcher-failed.log" 2>/dev/null || true
      stop_mesh
      return 1
    fi
    sleep 0.2
  done
}
if ! start_mesh; then
  echo "the mesh did not start; trying once more" >&2
  sleep 2
  start_mesh || { echo "the mesh did not start" >&2; exit 1; }
fi
export BOOKMESH_PKI_DIR="$root/data/pki"
export BOOKMESH_CA="$BOOKMESH_PKI_DIR/ca.crt"
export BOOKMESH_TOKEN_TOOL="$target_dir/debug/bookmesh-token"
BOOKMESH_TOKEN=$("$BOOKMESH_TOKEN_TOOL" --role librarian)
export BOOKMESH_TOKEN
"$@"
