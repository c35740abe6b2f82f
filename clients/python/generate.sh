#!/usr/bin/env bash
# Generates the Python client from proto/ (the one source of truth) into OUT (default:
# clients/python/generated, git-ignored): messages, typed stubs (.pyi) and gRPC stubs, with
# grpcio-tools' bundled protoc, so no system protoc is needed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/clients/python/generated}
python=${PYTHON:-python3}
mkdir -p "$out"
well_known=$("$python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
mapfile -t protos < <(cd "$root/proto" && find bookmesh -name '*.proto' | sort)
(cd "$root/proto" && "$python" -m grpc_tools.protoc -I. -I"$well_known" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" "${protos[@]}")
# Make every generated folder an importable package.
find "$out/bookmesh" -type d -exec touch {}/__init__.py \;
echo "generated the Python client in $out"
