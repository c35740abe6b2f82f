#!/usr/bin/env bash
# make fuzz: each fuzz target (fuzz/fuzz_targets) for SECONDS seconds (default 600) with
# libFuzzer through cargo-fuzz on the nightly toolchain, starting from the committed seeds
# (fuzz/seeds) and growing fuzz/corpus. Prints the inputs each target ran; exits non-zero on
# the first crash, whose input cargo-fuzz leaves in fuzz/artifacts. Installs cargo-fuzz if it
# is missing (the nightly toolchain must be there: rustup toolchain install nightly).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-600}
targets=(book_requests member_requests rental_rules)
rustup run nightly rustc --version >/dev/null 2>&1 || {
  echo "the nightly toolchain is missing: rustup toolchain install nightly" >&2
  exit 1
}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
# The sanitizer build lives apart from the workspace's target folder.
unset CARGO_TARGET_DIR

for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  log=$(mktemp)
  if ! cargo +nightly fuzz run -O "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $target crashed (input in fuzz/artifacts/$target)" >&2
    exit 1
  fi
  runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  printf 'fuzz: %-16s %12s inputs in %ss, no crash\n' "$target" "$runs" "$seconds"
  rm -f "$log"
done
