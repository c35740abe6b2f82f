#!/usr/bin/env bash
# Scale up vs scale out (make demo-scale): the same load, three ways, side by side.
#   1. one small replica of rental-service (one runtime thread, its default request limit);
#   2. scale out: three such replicas behind one name (127.0.0.2-4 on loopback, one SQLite
#      database, as replicas share one database server), the client balancing over them;
#   3. scale up: one replica given three times the threads and the request limit.
# The load is loadgen's, at a fixed concurrency, reading rental cards (GetRentalCard) of members
# that rented, so it is the same work each way; its JSON report gives throughput and latency.
# On one machine, scale out and scale up buy about the same throughput: both add threads on
# the same cores. What only scale out buys is shown by make demo-failover (a replica lost
# under load, one added) and by the HPAs on Kubernetes (make hpa-demo): more machines.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${SECONDS_PER_WAY:-10}
concurrency=${CONCURRENCY:-48}
# shellcheck source=scripts/demo-lib.sh
source scripts/demo-lib.sh

command -v jq >/dev/null || { echo "jq not found" >&2; exit 1; }
command -v grpcurl >/dev/null || { echo "grpcurl not found: run make tools" >&2; exit 1; }
port=50073
hosts="$work/hosts"

stop_rentals() {
  for pid in "${rental_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${rental_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
rentals() { # rentals THREADS LIMIT ADDRESS...: rental replicas behind rental.demo
  local threads=$1 limit=$2
  shift 2
  rental_pids=()
  : >"$hosts"
  for address in "$@"; do
    start "rental-$address" rental-service BOOKMESH_LISTEN="$address:$port" \
      BOOKMESH_DATA_DIR="$work/rental" BOOKMESH_MEMBER_ENDPOINTS=http://127.0.0.1:50072 \
      BOOKMESH_BOOK_ENDPOINTS=http://127.0.0.1:50071 TOKIO_WORKER_THREADS="$threads" \
      BOOKMESH_MAX_CONCURRENT_REQUESTS="$limit"
    rental_pids+=("${pids[-1]}")
    echo "$address rental.demo" >>"$hosts"
  done
  for address in "$@"; do wait_serving "$address:$port"; done
}
load() { # load LABEL: the same load each time; one line of figures
  local report
  report=$(BOOKMESH_HOSTS_FILE="$hosts" BOOKMESH_INSECURE_PLAINTEXT=true "$bin/loadgen" \
    --rental "http://rental.demo:$port" --member http://127.0.0.1:50072 --book http://127.0.0.1:50071 \
    --concurrency "$concurrency" --duration "${seconds}s" --mix read=100 \
    --ids-file "$work/ids.json" --json 2>/dev/null)
  jq -r --arg way "$1" '"\($way)|\(.requests_per_sec | floor)|\(.p50_ms * 10 | round / 10)|\(.p99_ms * 10 | round / 10)|\(.succeeded)|\(.failed)"' <<<"$report"
}

echo "== starting member and book (one each), and preparing members who rented"
start member member-service BOOKMESH_LISTEN=127.0.0.1:50072 BOOKMESH_DATA_DIR="$work/member"
start book book-service BOOKMESH_LISTEN=127.0.0.1:50071 BOOKMESH_DATA_DIR="$work/book"
wait_serving 127.0.0.1:50072
wait_serving 127.0.0.1:50071
rentals 1 256 127.0.0.2
# Members and books registered once, and some rentals, so the cards have something to read.
BOOKMESH_HOSTS_FILE="$hosts" BOOKMESH_INSECURE_PLAINTEXT=true "$bin/loadgen" \
  --rental "http://rental.demo:$port" --member http://127.0.0.1:50072 --book http://127.0.0.1:50071 \
  --concurrency 8 --count 300 --mix rent=100 --members 100 --books 400 --ids-file "$work/ids.json" >/dev/null 2>&1
stop_rentals

rows=()
echo "== 1/3 one replica: 1 runtime thread, 256 requests at once ($seconds s, $concurrency calls in flight)"
rentals 1 256 127.0.0.2
rows+=("$(load "one replica")")
stop_rentals

echo "== 2/3 scale out: three such replicas behind rental.demo"
rentals 1 256 127.0.0.2 127.0.0.3 127.0.0.4
rows+=("$(load "three replicas (scale out)")")
stop_rentals

echo "== 3/3 scale up: one replica with 3 runtime threads and 768 requests at once"
rentals 3 768 127.0.0.2
rows+=("$(load "one bigger replica (scale up)")")
stop_rentals

echo
echo "GetRentalCard, $concurrency calls in flight for $seconds s each, on $(nproc) cores (debug build)"
{
  echo "way|calls/s|p50 ms|p99 ms|succeeded|failed"
  printf '%s\n' "${rows[@]}"
} | column -t -s '|'
# A way whose calls failed, or that served none, is a broken demo, not a figure.
for row in "${rows[@]}"; do
  IFS='|' read -r way rate _ _ _ failed <<<"$row"
  if [[ "$failed" != 0 || "$rate" == 0 ]]; then
    echo "!! $way: $failed calls failed, $rate calls/s (logs: $work)" >&2
    keep_work=1
    exit 1
  fi
done
