#!/usr/bin/env bash
# Makes the cluster's services answer on the host's usual ports (make port-forward), so the
# README's grpcurl commands and the generated clients work unchanged against kind:
# book 50051, member 50052, rental 50053, bestbook 50054, notification 50055. Ctrl-C stops the
# forwards.
set -euo pipefail
kubectl=${KUBECTL:-kubectl}

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT INT TERM
for forward in book:50051 member:50052 rental:50053 bestbook:50054 notification:50055; do
  "$kubectl" -n bookmesh port-forward --address 127.0.0.1 "svc/${forward%%:*}" "${forward#*:}:${forward#*:}" &
  pids+=($!)
done
echo "forwarding localhost:50051-50055 to the cluster; Ctrl-C to stop"
wait
