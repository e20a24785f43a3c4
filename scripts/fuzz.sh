#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz: libFuzzer + AddressSanitizer), the long run beside
# the short property pass of tests/fuzz.rs. One target at a time, one process, one core.
#   FUZZ_SECONDS    seconds per target (default 60)
#   FUZZ_TARGETS    targets to run (default: all, in fuzz/Cargo.toml order)
#   FUZZ_MAX_LEN    largest input in bytes (default 16384, as tests/fuzz.rs)
#   FUZZ_SANITIZER  address (default) or none
# Stable Rust is enough: cargo-fuzz's -Z flags are allowed with RUSTC_BOOTSTRAP=1 (the
# sanitizer runtimes ship with stable's rust-std for x86_64 Linux). Corpora grow in
# fuzz/corpus/<target>/ (seeded by fuzz/seeds.sh), crashes land in fuzz/artifacts/<target>/,
# logs in fuzz/logs/. Replay a crash: RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1

secs=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-config routing sse client_request provider_response stream_decoders pii flow cel template}
max_len=${FUZZ_MAX_LEN:-16384}
sanitizer=${FUZZ_SANITIZER:-address}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
./fuzz/seeds.sh >/dev/null
cargo fuzz build --sanitizer "$sanitizer"
bin=fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release

dict_for() {
  case $1 in
    config|client_request|provider_response) echo fuzz/dicts/json.dict ;;
    sse|stream_decoders) echo fuzz/dicts/sse.dict ;;
    flow) echo fuzz/dicts/flow.dict ;;
  esac
}

mkdir -p fuzz/logs
failed=0
rows=()
for t in $targets; do
  mkdir -p "fuzz/artifacts/$t" "fuzz/corpus/$t"
  log=fuzz/logs/$t.log
  args=(-max_total_time="$secs" -rss_limit_mb=2048 -timeout=5 -max_len="$max_len"
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/")
  dict=$(dict_for "$t")
  [ -n "$dict" ] && args+=(-dict="$dict")
  echo "== $t: ${secs}s" >&2
  start=$(date +%s)
  rc=0
  "$bin/$t" "fuzz/corpus/$t" "${args[@]}" >"$log" 2>&1 || rc=$?
  took=$(( $(date +%s) - start ))
  # libFuzzer's last status line (#N DONE cov: .. ft: .. corp: n/size ..) and final stats.
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$last")
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  files=$(find "fuzz/corpus/$t" -type f | wc -l)
  result=ok
  if [ "$rc" -ne 0 ]; then
    failed=1
    artifact=$(sed -n 's/.*Test unit written to \(.*\)/\1/p' "$log" | tail -1)
    result="FAILED (exit $rc) ${artifact:-see $log}"
  fi
  rows+=("$(printf '%-18s %6ss %12s %8s %7s %7s %12s %7s  %s' "$t" "$took" "${execs:--}" "${rate:--}" \
    "${cov:--}" "${ft:--}" "${corp:--}" "$files" "$result")")
done

printf '%-18s %7s %12s %8s %7s %7s %12s %7s  %s\n' target time execs exec/s cov ft corp files result
printf '%s\n' "${rows[@]}"
exit "$failed"
