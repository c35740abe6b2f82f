#!/usr/bin/env bash
# make soak: the mesh under steady load for a while (DURATION, default 300 s) while one replica
# of each service is SIGKILLed and restarted in turn (every KILL_EVERY seconds), then the
# consistency check. Prints the calls and errors by code, each surviving replica's RSS at the
# start and the end, and the checker's verdict. Two replicas per service behind one name each
# (127.0.0.2 and 127.0.0.3, loopback), sharing their service's SQLite database; plaintext,
# like the other loopback demos. Exits non-zero if the mesh ends inconsistent.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-300}
kill_every=${KILL_EVERY:-20}
rate=${RATE:-50}
bin=${BIN:-$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/debug}
work=$(mktemp -d)
declare -A pid_of
cleanup() {
  for pid in "${pid_of[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

hosts="$work/hosts"
: >"$hosts"
declare -A port_of=([book]=50071 [member]=50072 [rental]=50073)
for service in book member rental; do
  printf '127.0.0.2 %s.soak\n127.0.0.3 %s.soak\n' "$service" "$service" >>"$hosts"
done
common=(BOOKMESH_LOG_FORMAT=json BOOKMESH_INSECURE_PLAINTEXT=true BOOKMESH_HOSTS_FILE="$hosts"
  BOOKMESH_UPSTREAM_RESOLVE_INTERVAL=1s RUST_LOG=warn)

start() { # start SERVICE REPLICA(2|3)
  local service=$1 replica=$2 name="$1-$2" extra=()
  case $service in
    book | member) extra=("BOOKMESH_RENTAL_ENDPOINTS=http://rental.soak:${port_of[rental]}") ;;
    rental) extra=("BOOKMESH_BOOK_ENDPOINTS=http://book.soak:${port_of[book]}"
      "BOOKMESH_MEMBER_ENDPOINTS=http://member.soak:${port_of[member]}") ;;
  esac
  env "${common[@]}" "${extra[@]}" BOOKMESH_LISTEN="127.0.0.$replica:${port_of[$service]}" \
    BOOKMESH_DATA_DIR="$work/$service" "$bin/$service-service" >>"$work/$name.log" 2>&1 &
  pid_of[$name]=$!
}
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
wait_serving() { # wait_serving HOST:PORT
  for _ in $(seq 1 300); do
    if grpcurl -plaintext "$1" grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING; then return 0; fi
    sleep 0.2
  done
  echo "$1 never became SERVING" >&2
  exit 1
}
command -v grpcurl >/dev/null || { echo "grpcurl not found: run make tools" >&2; exit 1; }

echo "== soak: ${duration}s at ${rate} calls/s, a replica killed every ${kill_every}s (binaries: $bin)"
for service in book member rental; do
  for replica in 2 3; do start "$service" "$replica"; done
done
env "${common[@]}" BOOKMESH_LISTEN=127.0.0.1:50074 BOOKMESH_DATA_DIR="$work/bestbook" \
  "BOOKMESH_RENTAL_ENDPOINTS=http://rental.soak:${port_of[rental]}" "$bin/bestbook-service" >"$work/bestbook.log" 2>&1 &
pid_of[bestbook]=$!
for service in book member rental; do
  for replica in 2 3; do wait_serving "127.0.0.$replica:${port_of[$service]}"; done
done
wait_serving 127.0.0.1:50074

env BOOKMESH_HOSTS_FILE="$hosts" BOOKMESH_INSECURE_PLAINTEXT=true "$bin/loadgen" \
  --rental "http://rental.soak:${port_of[rental]}" --member "http://member.soak:${port_of[member]}" \
  --book "http://book.soak:${port_of[book]}" --rate "$rate" --duration "${duration}s" \
  --mix read=60,rent=25,return=15 --members 200 --books 500 >"$work/loadgen.out" 2>"$work/loadgen.err" &
load=$!
# The survivors' memory once the load has warmed them up.
sleep 10
declare -A rss_start
for service in book member rental; do rss_start[$service]=$(rss_kb "${pid_of[$service-2]}"); done
rss_start[bestbook]=$(rss_kb "${pid_of[bestbook]}")

# Where each survivor's RSS went between the kills (MB): growth that levels off is warm-up
# (pools, caches, the allocator), growth that keeps its slope is a leak.
declare -A rss_trail
survivor_pid() { if [[ $1 == bestbook ]]; then echo "${pid_of[bestbook]}"; else echo "${pid_of[$1-2]}"; fi; }
kills=0
victims=(book member rental)
while kill -0 "$load" 2>/dev/null; do
  sleep "$kill_every"
  kill -0 "$load" 2>/dev/null || break
  for service in book member rental bestbook; do
    rss_trail[$service]+=" $(awk -v kb="$(rss_kb "$(survivor_pid "$service")")" 'BEGIN { printf "%.1f", kb/1024 }')"
  done
  service=${victims[$((kills % 3))]}
  kill -KILL "${pid_of[$service-3]}" 2>/dev/null || true
  wait "${pid_of[$service-3]}" 2>/dev/null || true
  kills=$((kills + 1))
  printf '  %4ss: killed %s-3 (SIGKILL), restarting\n' "$((SECONDS))" "$service"
  sleep 2
  start "$service" 3
done
wait "$load" || true

echo
if ! grep -q Summary "$work/loadgen.out"; then
  echo "loadgen failed:" >&2
  tail -5 "$work/loadgen.err" >&2
  exit 1
fi
sed -n '/Summary/,$p' "$work/loadgen.out"
echo
echo "== replicas killed and restarted: $kills"
echo "== RSS of the replicas never killed (start -> end)"
for service in book member rental bestbook; do
  pid=$(survivor_pid "$service")
  start_kb=${rss_start[$service]}
  end_kb=$(rss_kb "$pid")
  awk -v s="$service" -v a="$start_kb" -v b="$end_kb" \
    'BEGIN { printf "  %-9s %7.1f MB -> %7.1f MB (%+.1f %%)\n", s, a/1024, b/1024, (a > 0 ? (b-a)*100/a : 0) }'
done
echo "== their RSS at each kill (MB)"
for service in book member rental bestbook; do
  printf '  %-9s%s\n' "$service" "${rss_trail[$service]:-}"
done

echo
echo "== consistency check"
if env BOOKMESH_INSECURE_PLAINTEXT=true "$bin/bookmesh-check" --wait 120s \
  --book "http://127.0.0.2:${port_of[book]}" --member "http://127.0.0.2:${port_of[member]}" \
  --rental "http://127.0.0.2:${port_of[rental]}" --bestbook http://127.0.0.1:50074; then
  echo "== soak: consistent"
else
  echo "== soak: INCONSISTENT (logs in $work kept)"
  trap - EXIT
  for pid in "${pid_of[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  exit 1
fi
