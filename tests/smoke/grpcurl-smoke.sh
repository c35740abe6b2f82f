#!/usr/bin/env bash
# Smoke test with the real grpcurl (1.8.6: reflection v1alpha only) against the real mesh as
# `make run` starts it, on mTLS with the local PKI under data/pki: list, describe, calls with a
# development token, refusals without one and in plaintext, health checks, a rich
# INVALID_ARGUMENT, the README walkthrough run verbatim, and a clean stop on SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/../.."

target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
launcher="$target_dir/debug/bookmesh-launcher"
work=$(mktemp -d)
log="$work/launcher.log"
launcher_pid=""

cleanup() {
  if [[ -n "$launcher_pid" ]] && kill -0 "$launcher_pid" 2>/dev/null; then
    kill -TERM "$launcher_pid" 2>/dev/null || true
    wait "$launcher_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "SMOKE FAIL: $*" >&2
  echo "--- launcher log (last 40 lines) ---" >&2
  [[ -f "$log" ]] && grep -vE '^\s+([0-9]+: |at )' "$log" | tail -n 40 >&2 || true
  exit 1
}

passed=0
check() { # check DESCRIPTION NEEDLE HAYSTACK
  if grep -qF -- "$2" <<<"$3"; then
    passed=$((passed + 1))
    echo "ok - $1"
  else
    echo "--- output ---" >&2
    echo "$3" >&2
    fail "$1: expected to find '$2'"
  fi
}

command -v grpcurl >/dev/null || fail "grpcurl not on PATH (make tools installs it)"
for port in 50051 50052 50053 50054; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port is already in use: stop whatever runs there (an earlier make run?)"
  fi
done

# The log exists before the launcher does: the wait below reads it at once.
: >"$log"
"$launcher" --data-dir "$work/data" >"$log" 2>&1 &
launcher_pid=$!
deadline=$((SECONDS + 150))
until grep -q "bookmesh is up" "$log"; do
  kill -0 "$launcher_pid" 2>/dev/null || fail "launcher exited during start-up"
  ((SECONDS < deadline)) || fail "mesh not up within 150s"
  sleep 0.2
done
passed=$((passed + 1)); echo "ok - mesh up"

ca=data/pki/ca.crt
TOKEN=$(make -s token ROLE=librarian)
[[ "$TOKEN" == *.*.* ]] || fail "make -s token printed something else than a token: $TOKEN"
gc() { grpcurl -cacert "$ca" -H "authorization: Bearer $TOKEN" "$@"; }

plaintext=$(grpcurl -plaintext -max-time 3 localhost:50052 list 2>&1 || true)
if grep -q "MemberService" <<<"$plaintext"; then fail "a plaintext client was served"; fi
passed=$((passed + 1)); echo "ok - plaintext is refused"
anonymous=$(grpcurl -cacert "$ca" -d '{}' localhost:50052 bookmesh.member.v1.MemberService/ListMembers 2>&1 || true)
check "no token is UNAUTHENTICATED" "Code: Unauthenticated" "$anonymous"
check "with the reason in google.rpc.ErrorInfo" "CREDENTIALS_MISSING" "$anonymous"

for entry in 50051:bookmesh.book.v1.BookService 50052:bookmesh.member.v1.MemberService 50053:bookmesh.rental.v1.RentalService 50054:bookmesh.bestbook.v1.BestBookService; do
  port=${entry%%:*}
  service=${entry#*:}
  check "list on :$port names $service" "$service" "$(grpcurl -cacert "$ca" "localhost:$port" list)"
  check "health of $service" '"status": "SERVING"' \
    "$(grpcurl -cacert "$ca" -d "{\"service\": \"$service\"}" "localhost:$port" grpc.health.v1.Health/Check)"
done

check "describe shows RPCs" "rpc RentBook" \
  "$(grpcurl -cacert "$ca" localhost:50053 describe bookmesh.rental.v1.RentalService)"
check "describe shows the documentation comments" "unique across members" \
  "$(grpcurl -cacert "$ca" localhost:50052 describe bookmesh.member.v1.Member)"

invalid=$(gc -d '{"name": "", "email": "nope"}' \
  localhost:50052 bookmesh.member.v1.MemberService/RegisterMember 2>&1 || true)
check "invalid input is INVALID_ARGUMENT" "Code: InvalidArgument" "$invalid"
check "with a decoded google.rpc.BadRequest" "fieldViolations" "$invalid"
check "naming the email field" '"field":"email"' "$invalid"

# The README walkthrough, exactly as written there.
walkthrough=$(awk '/<!-- walkthrough:start -->/{on=1; next} /<!-- walkthrough:end -->/{on=0} on' README.md |
  sed '/^```/d')
[[ -n "$walkthrough" ]] || fail "README has no walkthrough block"
race=$(awk '/<!-- race:start -->/{on=1; next} /<!-- race:end -->/{on=0} on' README.md | sed '/^```/d')
[[ -n "$race" ]] || fail "README has no race block"
# Both README blocks in one shell, as a reader pastes them one after the other.
output=$(bash -c "$walkthrough"$'\n'"$race"$'\n''echo "WALKTHROUGH_MEMBER_ID=$MEMBER_ID"; echo "RACE=$RIVAL_ID $COPY_ID"' 2>&1 || true)
check "walkthrough: rental item is pending" '"state": "ITEM_STATE_PENDING"' "$output"
check "walkthrough: card is available" '"status": "RENTAL_STATUS_AVAILABLE"' "$output"
check "walkthrough: the title came from the book service" '"title": "Dune"' "$output"
check "walkthrough: the validation error lists fields" '"field":"email"' "$output"
check "walkthrough: renting the same book twice is refused" "Code: AlreadyExists" "$output"
check "walkthrough: someone else's card is PERMISSION_DENIED" "Code: PermissionDenied" "$output"
check "walkthrough: ... because it is not the member's own" "NOT_SELF" "$output"
check "walkthrough: no token is UNAUTHENTICATED" "Code: Unauthenticated" "$output"
check "race: the rival's answer is shown" "rival: " "$output"
check "race: ... and yours" "you: " "$output"

# The README's curl walkthrough, through the gateway, exactly as written there.
curl_block=$(awk '/<!-- curl:start -->/{on=1; next} /<!-- curl:end -->/{on=0} on' README.md | sed '/^```/d')
[[ -n "$curl_block" ]] || fail "README has no curl block"
curl_output=$(bash -c "$curl_block" 2>&1 || true)
check "curl: the rental item is pending" '"state":"ITEM_STATE_PENDING"' "$curl_output"
check "curl: bad input is HTTP 400" "HTTP 400" "$curl_output"
check "curl: ... with its gRPC code" '"code":"invalid_argument"' "$curl_output"
check "curl: ... and the offending field" '"field":"email"' "$curl_output"

# The rental saga runs on events: the item becomes RENTED and the member earns 10 points.
member_id=$(sed -n 's/^WALKTHROUGH_MEMBER_ID=//p' <<<"$output")
[[ -n "$member_id" ]] || fail "walkthrough did not register a member"
deadline=$((SECONDS + 20))
until card=$(gc -d "{\"member_id\": \"$member_id\"}" localhost:50053 \
  bookmesh.rental.v1.RentalService/GetRentalCard 2>&1) && grep -q ITEM_STATE_RENTED <<<"$card"; do
  ((SECONDS < deadline)) || fail "the rental never became RENTED: $card"
  sleep 0.2
done
check "saga: the item is RENTED" '"state": "ITEM_STATE_RENTED"' "$card"
# 10 points for Dune, and 10 more if the member also won the race for Solaris.
until member=$(gc -d "{\"member_id\": \"$member_id\"}" localhost:50052 \
  bookmesh.member.v1.MemberService/GetMember 2>&1) && [[ $(jq -r '.member.points // "0"' <<<"$member") -ge 10 ]]; do
  ((SECONDS < deadline)) || fail "the member never got the points: $member"
  sleep 0.2
done
check "saga: the member earned points" '"points": "' "$member"
until best=$(gc -d '{"limit": 5}' localhost:50054 \
  bookmesh.bestbook.v1.BestBookService/GetBestBooks 2>&1) && grep -q '"title": "Dune"' <<<"$best"; do
  ((SECONDS < deadline)) || fail "the ranking never showed the rental: $best"
  sleep 0.2
done
check "read model: the best-seller ranking shows the rental" '"title": "Dune"' "$best"

# The race: exactly one member gets the copy; the other was refused or compensated.
read -r rival_id copy_id <<<"$(sed -n 's/^RACE=//p' <<<"$output")"
[[ -n "$rival_id" && -n "$copy_id" ]] || fail "the race block did not run"
settled() { # settled MEMBER: the member's state for the copy (NONE: never on their card)
  local card
  # A member refused up front may have no card at all (NOT_FOUND).
  card=$(gc -d "{\"member_id\": \"$1\"}" localhost:50053 \
    bookmesh.rental.v1.RentalService/GetRentalCard 2>/dev/null) || { echo NONE; return; }
  jq -r --arg copy "$copy_id" '[.rentalCard | (.rentedItems // []) + (.canceledItems // []) | .[] | select(.bookId == $copy) | .state] | first // "NONE"' <<<"$card"
}
until a=$(settled "$member_id") && b=$(settled "$rival_id") &&
  [[ "$a" != ITEM_STATE_PENDING && "$b" != ITEM_STATE_PENDING ]]; do
  ((SECONDS < deadline + 20)) || fail "the race never settled ($a, $b)"
  sleep 0.2
done
outcome=$(printf '%s\n%s\n' "$a" "$b" | sort | tr '\n' ' ')
case "$outcome" in
  "ITEM_STATE_CANCELED ITEM_STATE_RENTED "|"ITEM_STATE_RENTED NONE ") passed=$((passed + 1)); echo "ok - race: one rental, the other compensated or refused ($outcome)" ;;
  *) fail "race outcome: $outcome" ;;
esac

kill -TERM "$launcher_pid"
if ! wait "$launcher_pid"; then
  launcher_pid=""
  fail "launcher did not exit cleanly on SIGTERM"
fi
launcher_pid=""
check "clean stop" "all services stopped" "$(cat "$log")"
echo "smoke: $passed passed, 0 failed"
