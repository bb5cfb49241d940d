#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation on the stable toolchain (no
# cargo-fuzz or nightly needed) and runs each for a bounded time: ./run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(respond trailer packet_roundtrip frame ratelimit mode6 nts)
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps the instrumentation flags off build scripts (as cargo-fuzz does).
triple=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --bins --target "$triple"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "== $t: ${seconds}s"
  "target/$triple/release/$t" -max_total_time="$seconds" -artifact_prefix="artifacts/$t/" "corpus/$t" 2>&1 | tail -n 3
done
