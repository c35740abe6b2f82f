#!/usr/bin/env bash
# Demo of the mesh in the library (make demo-failover): scale-out over three member replicas
# behind one name, a fourth replica joining under load, one leaving, then a hung book service
# tripping the circuit breaker and recovery without operator action. Everything runs on
# loopback (127.0.0.2-5 are loopback addresses too); the load generator prints ghz-style reports.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_RUST_LOG=info,bookmesh::access=debug
# shellcheck source=scripts/demo-lib.sh
source scripts/demo-lib.sh

port=50062
hosts="$work/hosts"
printf '127.0.0.2 member.demo\n127.0.0.3 member.demo\n127.0.0.4 member.demo\n' >"$hosts"

calls() { # calls REPLICA...: GetMember calls served by each
  for replica in "$@"; do
    printf '  %-12s %s GetMember calls\n' "$replica" "$(grep -c 'MemberService/GetMember' "$work/member-$replica.log" || true)"
  done
}
load() { # load SECONDS
  BOOKMESH_HOSTS_FILE="$hosts" BOOKMESH_INSECURE_PLAINTEXT=true "$bin/loadgen" --rental http://127.0.0.1:50063 --member http://member.demo:$port --book http://127.0.0.1:50061 \
    --rate 200 --duration "$1s" --mix read=20,rent=50,return=30 --members 100 --books 300 --ids-file "$work/ids.json" 2>/dev/null |
    sed -n '/Summary/,$p'
}

command -v grpcurl >/dev/null || { echo "grpcurl not found: run make tools" >&2; exit 1; }
echo "== starting: 3 member replicas behind member.demo, book, rental"
for i in 2 3 4; do
  start "member-127.0.0.$i" member-service BOOKMESH_LISTEN=127.0.0.$i:$port BOOKMESH_DATA_DIR="$work/member"
done
start book book-service BOOKMESH_LISTEN=127.0.0.1:50061 BOOKMESH_DATA_DIR="$work/book"
start rental rental-service BOOKMESH_LISTEN=127.0.0.1:50063 BOOKMESH_DATA_DIR="$work/rental" \
  BOOKMESH_HOSTS_FILE="$hosts" BOOKMESH_MEMBER_ENDPOINTS=http://member.demo:$port \
  BOOKMESH_BOOK_ENDPOINTS=http://127.0.0.1:50061 BOOKMESH_UPSTREAM_RESOLVE_INTERVAL=1s \
  BOOKMESH_UPSTREAM_OPTIONS=book.call_timeout=500ms,book.breaker_open_duration=2s
for address in 127.0.0.2:$port 127.0.0.3:$port 127.0.0.4:$port 127.0.0.1:50061 127.0.0.1:50063; do
  wait_serving "$address"
done

echo; echo "== 1. steady load (200 rentals/s for 10 s): the three replicas share it"
load 10
calls 127.0.0.2 127.0.0.3 127.0.0.4

echo; echo "== 2. a fourth replica joins behind the name while load runs"
start "member-127.0.0.5" member-service BOOKMESH_LISTEN=127.0.0.5:$port BOOKMESH_DATA_DIR="$work/member"
wait_serving 127.0.0.5:$port
echo "127.0.0.5 member.demo" >>"$hosts"
load 5
calls 127.0.0.2 127.0.0.3 127.0.0.4 127.0.0.5

echo; echo "== 3. replica 127.0.0.2 stops under load: retries absorb it"
(sleep 2; kill -TERM "${pid_of[member-127.0.0.2]}"; sed -i '/127.0.0.2/d' "$hosts") &
load 6

echo; echo "== 4. the book service hangs (SIGSTOP): the breaker opens and rentals fail fast"
kill -STOP "${pid_of[book]}"
load 5
grep -o '"message":"circuit breaker[^"]*"' "$work/rental.log" | sort | uniq -c || true

echo; echo "== 5. the book service comes back (SIGCONT): half-open trials close the breaker"
kill -CONT "${pid_of[book]}"
sleep 3
load 5
grep -o '"message":"[^"]*circuit breaker[^"]*"' "$work/rental.log" | sort | uniq -c || true
