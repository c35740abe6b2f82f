#!/usr/bin/env bash
# make fault: switches an injected fault (docs/faults.md) on a service of the running mesh
# (make run) through its admin port, with a development admin token.
#
#   SERVICE=book                       lists book's faults
#   SERVICE=book NAME=error CODE=UNAVAILABLE RATE=0.5
#   SERVICE=book NAME=latency METHOD=GetBook MS=300      (or MAX_MS=300 for a random delay)
#   SERVICE=book NAME=error OFF=1      switches it off
# Settings: METHOD, RATE, CODE, MS, MAX_MS, DELAY_MS, EVENT_TYPE, POINT.
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A admin_port=([book]=51051 [member]=51052 [rental]=51053 [bestbook]=51054)
service=${SERVICE:-}
port=${admin_port[$service]:-}
if [[ -z $port ]]; then
  echo "SERVICE must be one of: ${!admin_port[*]}" >&2
  exit 2
fi
url="http://${HOST:-127.0.0.1}:$port/faults"
if [[ -z ${NAME:-} ]]; then
  curl -sS "$url"
  exit
fi
token=$(cargo run --quiet -p bookmesh-token -- --role admin)
if [[ -n ${OFF:-} ]]; then
  curl -sS -X DELETE -H "authorization: Bearer $token" "$url/$NAME"
  exit
fi
# The settings as JSON, from whichever variables are set (numbers as numbers).
settings=$(python3 -c '
import json, os
fields = [("METHOD", "method", str), ("RATE", "rate", float), ("CODE", "code", str),
          ("MS", "fixed_ms", int), ("MAX_MS", "max_ms", int), ("DELAY_MS", "delay_ms", int),
          ("EVENT_TYPE", "event_type", str), ("POINT", "point", str)]
print(json.dumps({key: kind(os.environ[var]) for var, key, kind in fields if os.environ.get(var)}))
')
curl -sS -X PUT -H "authorization: Bearer $token" -H 'content-type: application/json' \
  --data "$settings" "$url/$NAME"
