#!/usr/bin/env bash
# make demo-faults: with the mesh running (make run, in another terminal), drives load with
# loadgen and walks through three faults (docs/faults.md), printing after each what the load
# saw (calls by status code) and what rental's and member's metrics say.
#   1. book answers every GetBook UNAVAILABLE: rental's breaker opens, rents fail fast;
#   2. book never answers GetBook: rents end DEADLINE_EXCEEDED at their deadline;
#   3. member refuses ItemRented events: rents succeed, and member dead-letters the events.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${SECONDS_PER_STEP:-10}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bin=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/debug
curl -sf localhost:51053/readyz >/dev/null || {
  echo "the mesh is not running: start it with make run (in another terminal)" >&2
  exit 1
}
metric() { # metric ADMIN_PORT SERIES
  curl -s "localhost:$1/metrics" | awk -v s="$2" 'index($0, s) == 1 { print $NF; found = 1 } END { if (!found) print 0 }'
}
load() { # load TITLE
  echo
  echo "== $1: ${seconds}s of load"
  # Setup calls (registering members and books) are not faulted: the faults target GetBook.
  "$bin/loadgen" --duration "${seconds}s" --rate 20 --mix read=40,rent=40,return=20 \
    >"$work/load.out" 2>"$work/load.err" || echo "   loadgen failed: $(tail -1 "$work/load.err")"
  sed -n '/Status code distribution/,/^$/p' "$work/load.out"
  echo "   rental's breaker to book (0 closed, 1 open, 2 half-open): $(metric 51053 'bookmesh_client_circuit_breaker_state{upstream="book"}')"
  echo "   events member dead-lettered: $(metric 51052 'bookmesh_consumer_events_total{outcome="dead_lettered",subscription="member:rental"}')"
}
fault() { # fault SERVICE NAME [SETTING=VALUE...]; OFF=1 as a setting switches it off
  env SERVICE="$1" NAME="$2" "${@:3}" scripts/fault.sh >/dev/null
}

cargo build --quiet -p bookmesh-loadgen -p bookmesh-token
load "baseline, no fault"

fault book error METHOD=GetBook CODE=UNAVAILABLE
load "book answers every GetBook UNAVAILABLE"
fault book error OFF=1

fault book hang METHOD=GetBook
load "book never answers GetBook"
fault book hang OFF=1

fault member poison-event EVENT_TYPE=bookmesh.rental.v1.ItemRented
load "member refuses ItemRented"
fault member poison-event OFF=1

load "all faults off again"
echo
echo "The dead letters stay until redriven: grpcurl ... bookmesh.events.v1.DeadLetterService/ListDeadLetters on member (docs/events.md)."
