#!/usr/bin/env bash
# Runs a command against the real mesh: starts the services as `make run` does (default ports,
# SQLite in a temporary folder), waits until all are SERVING, runs the command, stops them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
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

target_dir=$(cd "$root" && cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
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
"$@"
