#!/usr/bin/env bash
# Builds and runs the libFuzzer targets (see README → Fuzzing). Used by `make fuzz`, `make fuzz-smoke` and
# `make fuzz-seeds`; run from the repository root.
#
#   Fuzz/fuzz.sh build                    the instrumented build of every target, in .build-fuzz
#   Fuzz/fuzz.sh run SECONDS [TARGET...]  each target (default: all) for SECONDS, one after another
#   Fuzz/fuzz.sh seeds                    rewrites the committed seed corpora, Fuzz/Corpus/<target>/
#
# A run starts from the committed seeds plus what earlier runs found (.build-fuzz/corpus/<target>, outside git, so
# runs leave the tree clean), writes its log to .build-fuzz/logs/<target>.log and any crashing, leaking or slow input
# to .build-fuzz/findings/<target>/, and prints one line of figures per target. It fails when a target found something.
set -euo pipefail

SWIFT=${SWIFT:-swift}
# FUZZ_SCRATCH: another build folder, to build or run one target while a build holds .build-fuzz.
SCRATCH=${FUZZ_SCRATCH:-.build-fuzz}
TARGETS=(FuzzImageDecode FuzzFusedLetterbox FuzzMultipart FuzzSigningFiles FuzzConfiguration FuzzModelOutput)

# The longest input each target is given: images up to 256 KiB; signature and key files a little over their 64 KiB
# read limit, so that the limit is met; bodies, documents and model outputs smaller, so the fuzzer runs fast.
max_len() {
    case $1 in
        FuzzImageDecode | FuzzFusedLetterbox) echo 262144 ;;
        FuzzSigningFiles) echo 66000 ;;
        FuzzMultipart | FuzzModelOutput) echo 65536 ;;
        FuzzConfiguration) echo 16384 ;;
    esac
}

dictionary() {
    case $1 in
        FuzzImageDecode | FuzzFusedLetterbox) echo "-dict=Fuzz/Dictionaries/images.dict" ;;
        FuzzMultipart) echo "-dict=Fuzz/Dictionaries/multipart.dict" ;;
        FuzzConfiguration) echo "-dict=Fuzz/Dictionaries/configuration.dict" ;;
    esac
}

build() {
    # The targets exist only with YOLOSWAP_FUZZ set (Package.swift). Every Swift module is instrumented for coverage
    # and AddressSanitizer; lld, because SwiftPM's default gold crashes on the fuzzer runtime.
    for target in "${TARGETS[@]}"; do
        YOLOSWAP_FUZZ=1 "$SWIFT" build -c release --scratch-path "$SCRATCH" \
            -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld --product "$target"
    done
}

run() {
    local seconds=$1
    shift
    local targets=("$@")
    [ ${#targets[@]} -gt 0 ] || targets=("${TARGETS[@]}")
    local failed=0
    for target in "${targets[@]}"; do
        local corpus=$SCRATCH/corpus/$target findings=$SCRATCH/findings/$target log=$SCRATCH/logs/$target.log
        mkdir -p "$corpus" "$findings" "$SCRATCH/logs"
        cp -n Fuzz/Corpus/"$target"/* "$corpus"/ 2>/dev/null || true
        # shellcheck disable=SC2046
        if ! "$SCRATCH/release/$target" "$corpus" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
            -max_len="$(max_len "$target")" $(dictionary "$target") -artifact_prefix="$findings/" \
            -print_final_stats=1 >"$log" 2>&1; then
            failed=1
        fi
        summary "$target" "$log"
    done
    return $failed
}

# One line per target: execs, exec/s, the last coverage line's cov/ft/corpus, findings.
summary() {
    local target=$1 log=$2
    local execs rate status cov ft corpus findings
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    status=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
    corpus=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$status")
    findings=$(grep -cE '^(==[0-9]+==ERROR|SUMMARY: libFuzzer|ERROR: libFuzzer)' "$log" || true)
    printf '%-20s execs %-10s exec/s %-7s cov %-6s ft %-7s corpus %-12s findings %s\n' \
        "$target" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corpus:-?}" "$findings"
    if [ "$findings" != 0 ]; then grep -E 'ERROR|SUMMARY|Test unit written' "$log" | head -5; fi
}

seeds() {
    rm -rf Fuzz/Corpus
    .venv/bin/python Fuzz/make_seeds.py Fuzz/Corpus
    # The key made from fixed bytes is never freed before the process exits: no leak check for this one run.
    ASAN_OPTIONS=detect_leaks=0 FUZZ_WRITE_SEEDS=Fuzz/Corpus/FuzzSigningFiles "$SCRATCH/release/FuzzSigningFiles"
}

case ${1:-} in
    build) build ;;
    run) shift; run "$@" ;;
    seeds) seeds ;;
    *) echo "usage: $0 build | run SECONDS [TARGET...] | seeds" >&2; exit 2 ;;
esac
