# shellcheck shell=bash
# Shared by the demos that start their own processes (demo-failover, demo-scale,
# demo-redeploy): source it after `cd` to the repository's root. It sets $bin (the debug
# binaries), $work (a temporary folder with each process's log, deleted on exit unless
# keep_work=1) and stops every process it started on exit. DEMO_RUST_LOG sets the processes'
# log filter.
bin=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/debug
work=$(mktemp -d)
pids=()
declare -A pid_of
cleanup() {
  for pid in "${pids[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # A demo that failed sets keep_work=1 so its logs stay for reading.
  [[ -n "${keep_work:-}" ]] || rm -rf "$work"
}
trap cleanup EXIT

start() { # start NAME BINARY ENV...: a plaintext process, its log in $work/NAME.log
  local name=$1 binary=$2
  shift 2
  env BOOKMESH_LOG_FORMAT=json BOOKMESH_INSECURE_PLAINTEXT=true RUST_LOG="${DEMO_RUST_LOG:-warn}" \
    "$@" "$bin/$binary" >>"$work/$name.log" 2>&1 &
  pids+=($!)
  # shellcheck disable=SC2034 # read by the demos that source this file
  pid_of[$name]=$!
}
wait_serving() { # wait_serving HOST:PORT: until its health check answers SERVING (60 s at most)
  for _ in $(seq 1 600); do
    if grpcurl -plaintext "$1" grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING; then return 0; fi
    sleep 0.1
  done
  echo "$1 never became SERVING (logs: $work)" >&2
  exit 1
}
