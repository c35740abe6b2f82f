#!/usr/bin/env bash
# make fuzz: each fuzz target (fuzz/fuzz_targets) for SECONDS seconds (default 600) with
# libFuzzer through cargo-fuzz, starting from the committed seeds (fuzz/seeds) and growing
# fuzz/corpus. Prints the inputs each target ran; exits non-zero on the first crash, whose
# input cargo-fuzz leaves in fuzz/artifacts. Installs cargo-fuzz if it is missing.
#
#   scripts/fuzz.sh [SECONDS]          release build with AddressSanitizer (nightly toolchain:
#                                      rustup toolchain install nightly)
#   scripts/fuzz.sh SECONDS --quick    what CI runs: a debug build without a sanitizer, on the
#                                      default toolchain, and a throwaway corpus (a panic is
#                                      still a crash; only memory errors in unsafe code would
#                                      go unseen, and the targets' code has none)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-600}
mode=${2:-full}
targets=(book_requests member_requests rental_rules)
if [[ $mode == --quick ]]; then
  toolchain=()
  build=(--dev --sanitizer none)
  corpus_root=$(mktemp -d)
  trap 'rm -rf "$corpus_root"' EXIT
else
  rustup run nightly rustc --version >/dev/null 2>&1 || {
    echo "the nightly toolchain is missing: rustup toolchain install nightly" >&2
    echo "(scripts/fuzz.sh SECONDS --quick fuzzes on the default toolchain)" >&2
    exit 1
  }
  toolchain=(+nightly)
  build=(-O)
  corpus_root=fuzz/corpus
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
# The instrumented build lives apart from the workspace's target folder.
unset CARGO_TARGET_DIR

for target in "${targets[@]}"; do
  # libFuzzer adds what it finds to the first folder; the seeds stay as committed.
  mkdir -p "$corpus_root/$target"
  log=$(mktemp)
  if ! cargo "${toolchain[@]}" fuzz run "${build[@]}" "$target" "$corpus_root/$target" \
    "fuzz/seeds/$target" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $target crashed (input in fuzz/artifacts/$target)" >&2
    exit 1
  fi
  runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  printf 'fuzz: %-16s %12s inputs in %ss, no crash\n' "$target" "$runs" "$seconds"
  rm -f "$log"
done
