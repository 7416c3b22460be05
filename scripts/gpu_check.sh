#!/usr/bin/env bash
# The GPU proof of issue 30, item 5: the GPU tests, then the table of training images/s.
#
#   bash scripts/gpu_check.sh [--cpu] [OUT]          # OUT: logs/gpu_check/ by default
#
# For whoever holds a GPU machine: one GPU, no network, under 8 minutes (GPU_CHECK_BUDGET_S,
# 390 s by default, is shared out below; a compile that runs long can add 60 s at most). It runs from any folder, with the package installed
# or not: src/ and the repository root go in front of PYTHONPATH (Hydra and OmegaConf may come
# as wheels already on it). First `pytest -m gpu` (tests/test_gpu.py, test_device_decode.py), then
# scripts/benchmark_gpu.py, which runs even when the tests fail, so that the figures come back.
# The table goes to OUT/gpu_check.md and OUT/gpu_check.json, each step's output to OUT/*.log;
# both steps' statuses are printed at the end, and the exit status is 0 only when both passed.
# --cpu: a dry run on the CPU at tiny sizes (tests/test_scripts.py runs it); the GPU tests,
# which skip themselves without CUDA, are not run.
# The table ends with the GPU-decode input path (data.decode=gpu): the images/s it decodes and
# transforms on the GPU, and the ratio input / model for each model row.
set -uo pipefail

status() {  # a step's exit status in words; $2: the seconds its timeout allowed
    case $1 in
        0) echo "passed" ;;
        124) echo "FAILED: stopped after $2 s" ;;
        *) echo "FAILED (exit $1)" ;;
    esac
}

usage="usage: bash scripts/gpu_check.sh [--cpu] [OUT]"
cpu=false
out=logs/gpu_check
for arg in "$@"; do
    case "$arg" in
        --cpu) cpu=true ;;
        -h | --help) echo "$usage"; exit 0 ;;
        -*) echo "gpu_check: unknown option $arg; $usage" >&2; exit 2 ;;
        *) out=$arg ;;
    esac
done
mkdir -p "$out" && out=$(cd "$out" && pwd)  # absolute, before leaving the caller's folder
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2
export PYTHONPATH="$root/src:$root${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python}
budget=${GPU_CHECK_BUDGET_S:-390}

if $cpu; then
    tests="skipped (--cpu)"
    tests_rc=0
else
    echo "== pytest -m gpu (tests/test_gpu.py, tests/test_device_decode.py) =="
    # At most half the budget: a hung test must not take the benchmark's time.
    timeout $((budget / 2)) "$python" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py \
        tests/test_device_decode.py 2>&1 | tee "$out/pytest.log"
    tests_rc=$?
    tests=$(status "$tests_rc" $((budget / 2)))
fi

echo "== scripts/benchmark_gpu.py =="
left=$((budget - SECONDS))
bench_args=(--out "$out" --budget-s "$left")
$cpu && bench_args+=(--cpu)
# The benchmark skips rows that would start past its budget; the hard stop is for a compile
# that runs long (the table of the rows done so far is already written).
timeout $((left + 60)) "$python" scripts/benchmark_gpu.py "${bench_args[@]}" 2>&1 \
    | tee "$out/benchmark.log"
bench_rc=$?
bench=$(status "$bench_rc" $((left + 60)))

echo "== gpu_check, $SECONDS s: pytest -m gpu $tests; benchmark $bench; table in $out/gpu_check.md =="
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
