#!/usr/bin/env bash
# Contract governance: buf lint (STANDARD + COMMENTS), buf breaking against the contracts of the
# previous commit (FILE rules: generated code of every language keeps compiling), and a
# self-test proving the breaking check bites: a deliberate breaking change to a copy of the
# contracts must fail it, an additive change must pass.
set -euo pipefail
cd "$(dirname "$0")/.."
buf=${BUF:-.ci/tools/node_modules/.bin/buf}

(cd proto && "../$buf" lint)
echo "ok - buf lint"

against=${CONTRACTS_BASELINE:-HEAD~1}
if git rev-parse --verify --quiet "$against^{commit}" >/dev/null &&
  git cat-file -e "$against:proto/buf.yaml" 2>/dev/null; then
  "$buf" breaking proto --against ".git#ref=$against,subdir=proto"
  echo "ok - no breaking change against $against"
else
  echo "ok - no contracts at $against to compare with (first commit with contracts)"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r proto "$work/base"

cp -r proto "$work/additive"
sed -i 's|  string cancel_reason = 9;|  string cancel_reason = 9;\n  // A field added later: additive changes are fine.\n  string note = 10;|' \
  "$work/additive/bookmesh/rental/v1/rental.proto"
grep -q "string note = 10;" "$work/additive/bookmesh/rental/v1/rental.proto"
"$buf" breaking "$work/additive" --against "$work/base" >/dev/null
echo "ok - an additive change passes"

cp -r proto "$work/breaking"
# Renumbering a field breaks every client already generated.
sed -i 's|  int64 points = 4;|  int64 points = 40;|' "$work/breaking/bookmesh/member/v1/member.proto"
grep -q "points = 40" "$work/breaking/bookmesh/member/v1/member.proto"
if "$buf" breaking "$work/breaking" --against "$work/base" >/dev/null 2>&1; then
  echo "FAIL - a renumbered field was not reported as breaking" >&2
  exit 1
fi
echo "ok - a breaking change fails the check"
