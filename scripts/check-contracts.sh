#!/usr/bin/env bash
# Contract governance: buf lint (STANDARD + COMMENTS); buf breaking (FILE rules: generated code
# of every language keeps compiling) for every commit that changed the contracts against its
# parent, and for the working tree against HEAD; and a self-test proving the breaking check
# bites: a deliberate breaking change to a copy of the contracts must fail it, an additive
# change must pass.
set -euo pipefail
cd "$(dirname "$0")/.."
buf=${BUF:-.ci/tools/node_modules/.bin/buf}

(cd proto && "../$buf" lint)
echo "ok - buf lint"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The contracts of a commit, extracted into a folder of their own.
contracts_at() { # contracts_at COMMIT FOLDER
  mkdir -p "$2"
  git archive "$1" proto | tar -x -C "$2"
}

# Every commit, not only the last one: CI sees a session's commits land together, and a breaking
# change in any of them would reach clients.
checked=0
for commit in $(git rev-list HEAD -- proto); do
  parent=$(git rev-parse --verify --quiet "$commit^") || continue
  git cat-file -e "$parent:proto/buf.yaml" 2>/dev/null || continue
  contracts_at "$commit" "$work/history/new"
  contracts_at "$parent" "$work/history/old"
  if ! "$buf" breaking "$work/history/new/proto" --against "$work/history/old/proto"; then
    echo "FAIL - commit $(git log -1 --format='%h %s' "$commit") breaks the contracts" >&2
    exit 1
  fi
  rm -rf "$work/history"
  checked=$((checked + 1))
done
echo "ok - none of the $checked commits that changed the contracts broke them"

against=${CONTRACTS_BASELINE:-HEAD}
if git cat-file -e "$against:proto/buf.yaml" 2>/dev/null; then
  contracts_at "$against" "$work/against"
  "$buf" breaking proto --against "$work/against/proto"
  echo "ok - the working tree breaks nothing against $against"
fi

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
