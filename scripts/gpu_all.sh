#!/usr/bin/env bash
# Every GPU measurement of the project in one command, on one GPU machine without network:
#
#   OUT=/some/dir bash scripts/gpu_all.sh
#
# Carry build/flashinfer (the trimmed FlashInfer bundle: scripts/flashinfer_bundle.py) and
# .cache/sglang-0.5.23/src (SGLang's files, for the upstream comparisons) with the working tree.
# The machine needs torch, Triton, nvcc and ninja; pytest is used when it is there.
#
# Stages, each under `timeout` (SIGINT first, so pytest prints its summary and the benchmarks
# keep the JSON of the stages they finished), with budgets in seconds that sum to 560:
#
#   setup   30  install this project (editable, no dependencies)
#           15  install the FlashInfer bundle; then FlashInfer's JIT modules compile in the
#               background (nice 19, three modules at a time), most wanted first: the NVFP4
#               decode, the BF16/FP8 decode baselines, the page writers
#   a1      40  kernel bit-exactness on the GPU: every recipe's quantize, store and dequantize
#               kernels, the CUDA pool, nvfp4_4over6's quantize kernel (pytest, 6 workers)
#   a2      50  decode-attention GPU tests at full size (pytest -m gpu, 6 workers)
#   e       70  MLA decode benchmark                          -> $OUT/mla_decode_attention.json
#   d       75  FP4 kernel benchmark (--no-tune)              -> $OUT/quant_kernels.json
#   c      220  decode-attention benchmark with FlashInfer's decode on the same caches
#               (--no-shapes; the sweep runs when stages 1-6 end by its --budget-s)
#                                                              -> $OUT/decode_attention.json
#   b1      35  FlashInfer byte conformance (--quick)          -> $OUT/flashinfer.json
#   b2      15  FlashInfer GPU tests (python tests/test_flashinfer_gpu.py)
#   b3      10  the 4-over-6 quantize kernel against FlashInfer's writer (pytest)
#
# Why this order: the benchmarks that need no FlashInfer run first, so the background compile has
# the most time before the decode benchmark reaches its FlashInfer stage (which waits up to
# FLASHINFER_DECODE_WAIT_S for a module still compiling, then skips it: FLASHINFER_DECODE_BUILD=0).
# Why these budgets: the scripts' own estimates on an H200 (decode benchmark ~4-5 min for all eight
# stages, of which the other shapes take about a minute and the sweep about half a minute; MLA
# ~1-2 min; the kernel benchmark without tuning about a minute), cut so that the whole call ends
# within a 10-minute limit per command with room for the machine's start. Each budget is an
# environment variable (T_SETUP_PROJECT, T_SETUP_FLASHINFER, T_A1, T_A2, T_E, T_D, T_C, T_B1,
# T_B2, T_B3); no stage runs past TOTAL seconds (default 560) after the start. DECODE_ARGS
# replaces the decode benchmark's `--no-shapes` (e.g. DECODE_ARGS=--no-sweep).
#
# What comes back (at most 8 files): the three benchmark JSONs, flashinfer.json, gpu_all.log
# (this script's progress lines and every stage's status) and all.tgz (every log, the compile
# record, FlashInfer's build log, the test outputs). Work files live in build/gpu-all (WORK).
# DRY_RUN=1 prints what each stage would run, with its budget, and runs nothing.
# A failing stage does not stop the later ones; the exit status says whether all passed.

set -u -o pipefail
export PYTHONUNBUFFERED=1
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$HERE"
OUT="${OUT:-$HERE/build/gpu-all-out}"
WORK="${WORK:-$HERE/build/gpu-all}"
mkdir -p "$OUT" "$WORK"
PY="${PYTHON:-$(command -v python || command -v python3)}"
export PYTHON="$PY"
START=$(date +%s)
TOTAL="${TOTAL:-560}"
LOG="$OUT/gpu_all.log"
: > "$LOG"
status=0

say() { echo "[gpu_all] +$(( $(date +%s) - START )) s: $*" | tee -a "$LOG"; }

pack() {  # everything small into one archive, after every stage (a run cut short keeps it)
    cp -f build/flashinfer-run/ws/jit_builds.jsonl "$WORK/" 2>/dev/null
    tar -czf "$OUT/all.tgz.tmp" -C "$(dirname "$WORK")" "$(basename "$WORK")" 2>/dev/null \
        && mv -f "$OUT/all.tgz.tmp" "$OUT/all.tgz"
}

# stage NAME BUDGET CMD...: run CMD under `timeout`, for at most BUDGET seconds and never past
# TOTAL; its output goes to $WORK/NAME.log, its last lines to the console and gpu_all.log.
stage() {
    local name=$1 budget=$2; shift 2
    local left=$(( TOTAL - ($(date +%s) - START) ))
    (( budget > left )) && budget=$left
    if (( budget < 10 )); then
        say "$name: SKIPPED (only $left s left of $TOTAL)"; status=1; return
    fi
    if [ -n "${DRY_RUN:-}" ]; then say "$name: would run (budget $budget s): $*"; return; fi
    say "$name: start (budget $budget s): $*"
    local t0 rc took
    t0=$(date +%s)
    timeout -s INT -k 5 "$budget" "$@" > "$WORK/$name.log" 2>&1
    rc=$?
    took=$(( $(date +%s) - t0 ))
    tail -n "${TAIL_LINES:-8}" "$WORK/$name.log" | sed "s/^/  [$name] /" | tee -a "$LOG"
    if (( rc == 0 )); then
        say "$name: ok in $took s"
    elif (( rc == 124 || rc == 137 )); then
        say "$name: CUT at its budget ($took s): what it saved so far is kept"; status=1
    else
        say "$name: FAILED (exit $rc) in $took s"; status=1
    fi
    pack
}

say "machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1); $(nproc) CPUs"
"$PY" -c "import torch, triton, sys; print('[gpu_all] torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'python', sys.version.split()[0])" | tee -a "$LOG"
[ -d .cache/sglang-0.5.23/src ] || say "note: .cache/sglang-0.5.23/src is missing: the SGLang comparisons record why they did not run"

# -- setup -----------------------------------------------------------------------------------------
stage setup_project "${T_SETUP_PROJECT:-30}" "$PY" -m pip install --quiet --no-deps --no-build-isolation \
    --disable-pip-version-check -e .
if ! "$PY" -c "import nvfp4_kvcache, nvfp4_kvcache_triton" 2>/dev/null; then
    mkdir -p build/pathmap && ln -sfn "$HERE/reference_impl" build/pathmap/nvfp4_kvcache \
        && ln -sfn "$HERE/kernels" build/pathmap/nvfp4_kvcache_triton
    export PYTHONPATH="$HERE/build/pathmap${PYTHONPATH:+:$PYTHONPATH}"
    say "using a path mapping for nvfp4_kvcache and nvfp4_kvcache_triton"
fi
stage setup_flashinfer "${T_SETUP_FLASHINFER:-15}" bash scripts/flashinfer_install.sh
JIT=""
jit_running() { [ -n "$JIT" ] && [ "$JIT" != dry ] && kill -0 "$JIT" 2>/dev/null; }
if [ -n "${DRY_RUN:-}" ]; then
    say "would start FlashInfer's JIT in the background: nvfp4_decode, baselines, writers"
    JIT=dry
elif [ -d build/flashinfer-run/pkg/flashinfer ]; then
    # one JIT cache for every process of the run (flashinfer_env.activate sets the same defaults)
    export PYTHONPATH="$HERE/build/flashinfer-run/pkg:$HERE/build/flashinfer-run/site${PYTHONPATH:+:$PYTHONPATH}"
    export FLASHINFER_WORKSPACE_BASE="${FLASHINFER_WORKSPACE_BASE:-$HERE/build/flashinfer-run/ws}"
    export FLASHINFER_JIT_BUILD_LOG="${FLASHINFER_JIT_BUILD_LOG:-$FLASHINFER_WORKSPACE_BASE/jit_builds.jsonl}"
    export MAX_JOBS="${MAX_JOBS:-$(nproc)}" FLASHINFER_PREBUILD_PARALLEL="${FLASHINFER_PREBUILD_PARALLEL:-3}"
    mkdir -p "$FLASHINFER_WORKSPACE_BASE"
    say "FlashInfer JIT in the background (nice 19, $FLASHINFER_PREBUILD_PARALLEL modules at a time): nvfp4_decode, baselines, writers"
    setsid nice -n 19 "$PY" scripts/flashinfer_env.py prebuild --groups nvfp4_decode,baselines,writers \
        --out "$WORK/flashinfer_compile.json" > "$WORK/jit.log" 2>&1 &
    JIT=$!
else
    say "no FlashInfer bundle installed: the FlashInfer stages record why"
fi

# -- tests -----------------------------------------------------------------------------------------
PYTEST=()      # pytest, stopping at the first failure
PYTEST_N=()    # the same over several worker processes (Triton compiles in parallel)
if "$PY" -c "import pytest" 2>/dev/null; then
    PYTEST=("$PY" -m pytest -q -x -rfE -p no:cacheprovider)
    "$PY" -c "import pytest_timeout" 2>/dev/null && PYTEST+=(--timeout 120)
    if ! "$PY" -c "import sybil" 2>/dev/null && ! grep -q "except ImportError" conftest.py; then
        PYTEST+=(--noconftest -o "addopts=-ra")   # this conftest needs sybil (the docs stack) to load
    fi
    PYTEST_N=("${PYTEST[@]}")
    "$PY" -c "import xdist" 2>/dev/null && PYTEST_N+=(-n "${TEST_WORKERS:-6}")
else
    say "pytest is not installed: the pytest stages are skipped"
fi
if (( ${#PYTEST[@]} )); then
    stage a1_kernel_tests "${T_A1:-40}" "${PYTEST_N[@]}" tests/test_kernels_quantize.py tests/test_kernels_store.py \
        tests/test_pool_cuda.py tests/test_nvfp4_4over6.py -k "not flashinfer"
    stage a2_decode_attention_tests "${T_A2:-50}" "${PYTEST_N[@]}" -m gpu tests/test_decode_attention_kernel.py \
        tests/test_decode_attention_variants.py tests/test_mla_decode_attention_kernel.py
fi

# -- benchmarks ------------------------------------------------------------------------------------
stage e_mla_bench "${T_E:-70}" "$PY" scripts/bench_mla_decode_attention.py --out "$OUT/mla_decode_attention.json"
stage d_quant_bench "${T_D:-75}" "$PY" scripts/bench_quant_kernels.py --no-tune --out "$OUT/quant_kernels.json"
jit_running && say "JIT so far: $(grep -c 'compiled after' "$WORK/jit.log") modules compiled ($(tail -n 1 "$WORK/jit.log"))"
T_C_EFF=$(( ${T_C:-220} < TOTAL - ($(date +%s) - START) ? ${T_C:-220} : TOTAL - ($(date +%s) - START) ))
# FlashInfer's stage waits up to a minute for a module still compiling, then skips it (no compile inside
# the benchmark); the sweep (about 35 s) starts only when stages 1-6 end with a minute of the budget left
export FLASHINFER_DECODE_WAIT_S="${FLASHINFER_DECODE_WAIT_S:-60}" FLASHINFER_DECODE_BUILD="${FLASHINFER_DECODE_BUILD:-0}"
# shellcheck disable=SC2086  # DECODE_ARGS is a list of flags
stage c_decode_bench "$T_C_EFF" "$PY" scripts/bench_decode_attention.py ${DECODE_ARGS:---no-shapes} \
    --budget-s $(( T_C_EFF > 100 ? T_C_EFF - 60 : 40 )) --out "$OUT/decode_attention.json"

# -- FlashInfer ------------------------------------------------------------------------------------
if [ -n "$JIT" ]; then
    jit_running && say "JIT still running: a FlashInfer stage that needs a module being built waits for it (its lock)"
    stage b1_flashinfer_conformance "${T_B1:-35}" "$PY" scripts/flashinfer_conformance.py --quick \
        --out "$OUT/flashinfer.json" --compile-record "$WORK/flashinfer_compile.json"
    stage b2_flashinfer_gpu_tests "${T_B2:-15}" "$PY" tests/test_flashinfer_gpu.py
    if (( ${#PYTEST[@]} )); then
        stage b3_flashinfer_4over6_tests "${T_B3:-10}" "${PYTEST[@]}" tests/test_nvfp4_4over6.py -k flashinfer
    fi
    if jit_running; then
        say "JIT still running at the end: stopped"; kill -- -"$JIT" 2>/dev/null
    fi
    [ -f "$WORK/jit.log" ] && cat "$WORK/jit.log" >> "$LOG"
fi

grep -E "\[gpu_all\]" "$LOG" | grep -E "ok in|CUT|FAILED|SKIPPED" > "$WORK/stages.txt"
pack
say "done (status $status); results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit $status
