#!/usr/bin/env bash
# Fuzz the IPC channel's framing for a bounded time (default 60 s).
#
#   bash fuzz/run.sh [seconds]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The toolchain here is
# stable only, so nightly flags are allowed through RUSTC_BOOTSTRAP and the
# sanitizer is off (coverage guidance still works: it is libFuzzer's
# sancov instrumentation, not ASan). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
mkdir -p corpus/framing
RUSTC_BOOTSTRAP=1 cargo fuzz run framing --sanitizer none --release \
    corpus/framing seeds/framing -- \
    -max_total_time="$secs" -rss_limit_mb=1024 -max_len=262144 -print_final_stats=1
