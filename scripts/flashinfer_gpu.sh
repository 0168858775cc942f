#!/usr/bin/env bash
# Everything FlashInfer on one GPU machine, in one command (no network needed):
#
#   OUT=/some/dir bash scripts/flashinfer_gpu.sh
#
# 1. installs this project (editable, no dependencies) and the trimmed FlashInfer bundle
#    (build/flashinfer, written by scripts/flashinfer_bundle.py; carry it with the tree);
# 2. JIT-compiles the page writers, the NVFP4 dequantize and the NVFP4 FA2 decode (several modules
#    at a time, each in its own folder as FlashInfer's first use would, so the wrappers find them
#    built), then the BF16/FP8 decode baselines in the background (compile times recorded);
# 3. runs the byte conformance (scripts/flashinfer_conformance.py)   -> $OUT/flashinfer.json
# 4. runs the decode harness: backend probe, checks, headline timing -> $OUT/flashinfer_decode.json
# 5. runs the GPU tests (tests/test_flashinfer_gpu.py, without pytest) -> $OUT/flashinfer_tests.log
# Every step logs to $OUT/*.log as well; a failing step does not stop the later ones.
# QUICK=1 runs the conformance with small random classes and skips the headline decode shape.
# Each step has a time limit (seconds; T_CONFORMANCE 180, T_WAIT 60, T_DECODE 120, T_TESTS 90) so that
# one slow step cannot use up the machine: results are saved as they come, so a step cut short
# keeps what it measured.

set -u -o pipefail
export PYTHONUNBUFFERED=1
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$HERE"
OUT="${OUT:-$HERE/build/flashinfer-out}"
mkdir -p "$OUT"
PY="${PYTHON:-$(command -v python || command -v python3)}"
export PYTHON="$PY"
START=$(date +%s)
stamp() { echo "[gpu.sh] +$(( $(date +%s) - START )) s: $*"; }
status=0

stamp "machine: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1); $(nproc) CPUs"
"$PY" -c "import torch, sys; print('[gpu.sh] torch', torch.__version__, 'cuda', torch.version.cuda, 'python', sys.version.split()[0])"

stamp "installing this project (editable, --no-deps)"
"$PY" -m pip install --quiet --no-deps --no-build-isolation --disable-pip-version-check -e . > "$OUT/install.log" 2>&1 \
    || { echo "[gpu.sh] editable install failed, using a path mapping"; cat "$OUT/install.log";
         mkdir -p build/pathmap && ln -sfn "$HERE/reference_impl" build/pathmap/nvfp4_kvcache \
         && ln -sfn "$HERE/kernels" build/pathmap/nvfp4_kvcache_triton && export PYTHONPATH="$HERE/build/pathmap${PYTHONPATH:+:$PYTHONPATH}"; }
stamp "installing the trimmed FlashInfer"
# shellcheck source=/dev/null
source scripts/flashinfer_install.sh || { echo "[gpu.sh] FlashInfer bundle missing"; exit 1; }
"$PY" -c "import numpy" 2>/dev/null && echo "[gpu.sh] numpy present" || echo "[gpu.sh] numpy absent (not needed)"

stamp "JIT phase 1: writers, dequantize, NVFP4 decode"
"$PY" scripts/flashinfer_env.py prebuild --groups writers,nvfp4_decode --out "$OUT/flashinfer_compile.json" \
    2>&1 | tee "$OUT/compile_phase1.log" || status=1
stamp "JIT phase 2 (background): BF16 / FP8 decode baselines"
setsid "$PY" scripts/flashinfer_env.py prebuild --groups baselines --out "$OUT/flashinfer_compile_baselines.json" \
    > "$OUT/compile_phase2.log" 2>&1 &
BG=$!

stamp "byte conformance"
CONF_ARGS=()
[ "${QUICK:-0}" = 1 ] && CONF_ARGS+=(--quick)
timeout "${T_CONFORMANCE:-180}" "$PY" scripts/flashinfer_conformance.py --out "$OUT/flashinfer.json" \
    --compile-record "$OUT/flashinfer_compile.json" ${CONF_ARGS[@]+"${CONF_ARGS[@]}"} 2>&1 | tee "$OUT/conformance.log" || status=1

stamp "waiting for JIT phase 2 (at most ${T_WAIT:-60} s; the harness skips modules not built by then)"
for _ in $(seq 1 "${T_WAIT:-60}"); do kill -0 "$BG" 2>/dev/null || break; sleep 1; done
cat "$OUT/compile_phase2.log"

stamp "decode harness"
DEC_ARGS=()
[ "${QUICK:-0}" = 1 ] && DEC_ARGS+=(--no-headline)
timeout "${T_DECODE:-120}" "$PY" scripts/flashinfer_harness.py --out "$OUT/flashinfer_decode.json" ${DEC_ARGS[@]+"${DEC_ARGS[@]}"} \
    2>&1 | tee "$OUT/decode.log" || status=1

stamp "GPU tests"
timeout "${T_TESTS:-90}" "$PY" tests/test_flashinfer_gpu.py 2>&1 | tee "$OUT/flashinfer_tests.log" || status=1
kill -0 "$BG" 2>/dev/null && { echo "[gpu.sh] JIT phase 2 still running: stopped"; kill -- -"$BG" 2>/dev/null; status=1; }
cp build/flashinfer-run/ws/jit_builds.jsonl "$OUT/" 2>/dev/null
stamp "done (status $status); results in $OUT"
exit $status
