#!/usr/bin/env bash
# Runs the request-validation fuzz target for a bounded time (default 600 s): bash fuzz/run.sh [SECONDS]
# Needs cargo-fuzz (`cargo install cargo-fuzz`); the stable toolchain is enough with RUSTC_BOOTSTRAP=1 and no
# sanitizer (the target is safe Rust: libFuzzer's coverage guidance and panics are what matter).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN="${1:-600}"
mkdir -p fuzz/corpus/request_validation
export SQLX_OFFLINE=true SQLX_OFFLINE_DIR="$PWD/.sqlx" RUSTC_BOOTSTRAP=1
exec cargo fuzz run --sanitizer none --release request_validation fuzz/corpus/request_validation -- \
  -max_total_time="$SECONDS_TO_RUN" -max_len=4096 -print_final_stats=1
