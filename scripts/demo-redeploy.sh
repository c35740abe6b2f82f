#!/usr/bin/env bash
# Microservices vs a monolith, by running it (make demo-redeploy): book-service is rebuilt and
# redeployed alone (stopped, started again from the new binary) while members keep reading their
# rental cards from rental-service. In a monolith the redeploy takes the whole application down;
# here only what needs the book service waits:
#   - reads on rental (GetRentalCard, its own database) go on: loadgen reports no failed call;
#   - a RentBook while book is away is refused at once (UNAVAILABLE: rental checks the book
#     synchronously), and works again once book is back;
#   - nothing is lost: rental's events wait in its outbox and book catches up from its cursor.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/demo-lib.sh
source scripts/demo-lib.sh

command -v jq >/dev/null || { echo "jq not found" >&2; exit 1; }
command -v grpcurl >/dev/null || { echo "grpcurl not found: run make tools" >&2; exit 1; }
seconds=${SECONDS_OF_LOAD:-15}
member=127.0.0.1:50082 book=127.0.0.1:50081 rental=127.0.0.1:50083

start_book() {
  start book book-service BOOKMESH_LISTEN=$book BOOKMESH_DATA_DIR="$work/book" BOOKMESH_RENTAL_ENDPOINTS=http://$rental
}
loadgen() {
  BOOKMESH_INSECURE_PLAINTEXT=true "$bin/loadgen" --rental http://$rental --member http://$member \
    --book http://$book --ids-file "$work/ids.json" "$@" 2>/dev/null
}
rent_one() { # rent_one: RentBook of the fresh member and book; prints the answer's code or state
  grpcurl -plaintext -d "{\"member_id\": \"$fresh_member\", \"book_id\": \"$fresh_book\"}" \
    $rental bookmesh.rental.v1.RentalService/RentBook 2>&1 | grep -E '^ *Code:|"state"' | head -1 | sed 's/^ *//' || true
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

echo "== starting member, book and rental; members rent some books (so their cards have something to read)"
start member member-service BOOKMESH_LISTEN=$member BOOKMESH_DATA_DIR="$work/member" BOOKMESH_RENTAL_ENDPOINTS=http://$rental
start_book
start rental rental-service BOOKMESH_LISTEN=$rental BOOKMESH_DATA_DIR="$work/rental" \
  BOOKMESH_MEMBER_ENDPOINTS=http://$member BOOKMESH_BOOK_ENDPOINTS=http://$book \
  BOOKMESH_UPSTREAM_RESOLVE_INTERVAL=1s
for address in $member $book $rental; do wait_serving "$address"; done
loadgen --concurrency 8 --count 200 --mix rent=100 --members 50 --books 300 >/dev/null
# One member and one book nobody has touched, for the RentBook tried during the redeploy.
fresh_member=$(grpcurl -plaintext -d '{"name": "Ada Lovelace", "email": "ada@example.org"}' \
  $member bookmesh.member.v1.MemberService/RegisterMember | jq -r .member.memberId)
fresh_book=$(grpcurl -plaintext -d '{"title": "Dune", "author": "Frank Herbert", "isbn": "978-0-441-01359-3",
  "publisher": "Ace", "published_on": "1965-08-01", "classification": "Fiction", "location": "Shelf 2"}' \
  $book bookmesh.book.v1.BookService/RegisterBook | jq -r .book.bookId)

echo "== members read their cards for $seconds s (loadgen, 16 in flight); meanwhile book is rebuilt and redeployed"
loadgen --concurrency 16 --duration "${seconds}s" --mix read=100 --json >"$work/report.json" &
load=$!
sleep 3
echo "-- t+3s  rebuilding book-service (cargo build -p book-service), while the old one serves"
cargo build --quiet -p book-service
echo "-- stopping book-service (SIGTERM: it drains, then exits)"
stopped=$(now_ms)
kill -TERM "${pid_of[book]}"
wait "${pid_of[book]}" 2>/dev/null || true
echo "-- book is down: a RentBook now answers: $(rent_one)"
echo "-- starting the new book-service"
start_book
wait_serving $book
echo "-- book serves again, $(($(now_ms) - stopped)) ms after it was stopped"
echo "-- a RentBook now answers: $(rent_one)"
wait "$load"

echo
echo "== what members reading their cards saw while book was redeployed"
jq -r '"  GetRentalCard calls: \(.count), succeeded \(.succeeded), refused \(.refused), failed \(.failed); p50 \(.p50_ms * 10 | round / 10) ms, p99 \(.p99_ms * 10 | round / 10) ms; codes \(.status_codes)"' "$work/report.json"
failed=$(jq -r .failed "$work/report.json")
if [[ "$failed" != 0 ]]; then
  echo "!! $failed reads failed while only book was redeployed (logs: $work)" >&2
  keep_work=1
  exit 1
fi
echo "  no read failed: rental answers from its own database, whatever book is doing."
