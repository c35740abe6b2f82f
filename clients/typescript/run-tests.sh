#!/usr/bin/env bash
# Runs the TypeScript client's test suite against the real mesh: installs the locked
# dependencies (npm ci), generates the client from proto/ with buf (local protoc-gen-es),
# compiles it, and runs node's test runner with the services started as `make run` does.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root/clients/typescript"
npm ci --no-audit --no-fund --loglevel=error
npm run --silent generate
npm run --silent build
"$root/clients/with-mesh.sh" node --test dist/test/
