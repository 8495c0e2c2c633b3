#!/usr/bin/env bash
# Fuzz for a bounded time (default 60 s per target): the IPC channel's
# framing, and the capture engine's ending rules.
#
#   bash fuzz/run.sh [seconds] [target...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The toolchain here is
# stable only, so nightly flags are allowed through RUSTC_BOOTSTRAP and the
# sanitizer is off (coverage guidance still works: it is libFuzzer's
# sancov instrumentation, not ASan). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
targets=("${@:-framing rules}")
for target in ${targets[@]}; do
    mkdir -p "corpus/$target"
    seeds=()
    [ -d "seeds/$target" ] && seeds=("seeds/$target")
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" --sanitizer none --release \
        "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$secs" -rss_limit_mb=1024 -max_len=262144 -print_final_stats=1
done
