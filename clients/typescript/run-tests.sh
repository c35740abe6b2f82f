#!/usr/bin/env bash
# Runs the TypeScript client's test suite against the real mesh, from a temporary copy of the
# package (the work tree stays clean): installs the locked dependencies (npm ci), generates the
# client from proto/ with buf (local protoc-gen-es, buf.gen.yaml), compiles it, and runs node's
# test runner with the services started as `make run` does.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
buf="$root/.ci/tools/node_modules/.bin/buf"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
package="$work/clients/typescript"
mkdir -p "$package"
cp -r "$root"/clients/typescript/{package.json,package-lock.json,tsconfig.json,src,test} "$package/"
rm -rf "$package/src/gen"
(cd "$package" && npm ci --no-audit --no-fund --loglevel=error)
# buf.gen.yaml's paths are relative to where buf runs: here, the temporary copy.
(cd "$work" && "$buf" generate "$root/proto" --template "$root/buf.gen.yaml")
(cd "$package" && npx tsc -p .)
cd "$package"
"$root/clients/with-mesh.sh" node --test dist/test/
