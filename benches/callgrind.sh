#!/usr/bin/env bash
# Instructions per event of the training loop, counted by callgrind (repeatable
# on a noisy shared machine, unlike wall-clock). Counts only the measured
# training call (`timed_pass` of examples/profile_{train,ffm}.rs): the warm-up
# call, which creates the rows, and the event generation are excluded.
# usage: benches/callgrind.sh [EVENTS]    (default 200000; prints one line per case)
# (builds into $CARGO_TARGET_DIR when set, else target/; mf_sgd_1m_ids is MF SGD with 1M ids
# per table, the bench's mf-1m size)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
cargo build -q --release --no-default-features --example profile_train --example profile_ffm
bin=${CARGO_TARGET_DIR:-target}/release/examples
out=$(mktemp -d)
count() { # name example args...
    local name=$1 ex=$2
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$out/$name.out" \
        --toggle-collect="$ex::timed_pass" "$bin/$ex" "$@" >/dev/null 2>"$out/$name.log"
    local ir
    ir=$(grep -E '^summary:|^totals:' "$out/$name.out" | head -1 | awk '{print $2}')
    awk -v n="$n" -v ir="$ir" -v name="$name" 'BEGIN { printf "%-22s %10.1f instr/event\n", name, ir / n }'
}
count mf_sgd_1t profile_train sgd "$n"
count mf_adagrad_1t profile_train adagrad "$n"
MONITOR=1 count mf_adagrad_monitor_1t profile_train adagrad "$n"
count ffm_4fields_1t profile_ffm ffm "$n"
count fm_4fields_1t profile_ffm fm "$n"
IDS=1000000 count mf_sgd_1m_ids profile_train sgd "$n"
rm -rf "$out"
