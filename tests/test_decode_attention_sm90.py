"""The decode-attention kernels compile for sm_90 (H100/H200) on this machine, GPU or not.

Runs `scripts/sass_decode_attention.py` (Triton's own ptxas; no `TRITON_INTERPRET`) in a
subprocess: every KV format's stage 1 and stage 2 at the headline shape, the GPU-only inline-PTX
decoders (`decode='prmt'`, `'prmt_bf16'`, `'cvt_f16'`) included, so an error only the GPU
compiler raises (a `tl.dot` shape, an fp8 cast, too many registers) fails CI. It also checks
that the decode path has no flush-to-zero arithmetic (the softmax's `ex2.approx.ftz` and the
final `log2`'s `fma.rn.ftz` are fine: neither touches a decoded value; nor does the
`cvt.rpi.ftz` of the power-of-two cvt path, which rounds the running log2 of V's largest weight
up to an integer: a flushed subnormal there moves that integer by at most one, and any integer
at or above it keeps the weights at most 1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FTZ_OK = {"ex2.approx.ftz.f32", "fma.rn.ftz.f32"}
FTZ_OK_BY_FORMAT = {"fp4_mx_block16+cvt_f16": FTZ_OK | {"cvt.rpi.ftz.f32"}}


ALL = {"bf16", "fp8_e4m3", "fp8_e4m3+cvt_f16", "nvfp4", "fp4_mx_block16", "nvfp4+prmt", "fp4_mx_block16+prmt",
       "nvfp4+prmt_bf16", "fp4_mx_block16+prmt_bf16", "nvfp4+cvt_f16", "fp4_mx_block16+cvt_f16", "nvfp4+no_decode"}


@pytest.mark.parametrize("options,want", [
    ([], ALL),
    # tokens in the MMA's M, FP4 rows from page blocks (the dense formats have no page blocks)
    (["--tokens-as-m", "--page-block", "--block-n", "32", "--warps", "2"], {f for f in ALL if "fp4" in f}),
    (["--tokens-as-m", "--block-n", "32", "--warps", "1", "--variants", "bf16,fp8_e4m3,fp8_e4m3+cvt_f16"],
     {"bf16", "fp8_e4m3", "fp8_e4m3+cvt_f16"}),
], ids=["heads_as_m", "tokens_as_m_page_blocks", "tokens_as_m_dense"])
def test_decode_attention_compiles_for_sm90(tmp_path, options, want):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "sass.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "sass_decode_attention.py"), "--json", str(out),
                           *options], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    formats = json.loads(out.read_text())["configs"][0]["formats"]
    assert set(formats) == want
    for fmt, c in formats.items():
        assert "LOCAL:0" in c["resources"], (fmt, c["resources"])          # no spills
        assert set(c["ftz_ptx"]) <= FTZ_OK_BY_FORMAT.get(fmt, FTZ_OK), (fmt, c["ftz_ptx"])
        assert c["opcodes"].get("HMMA", 0) > 0, fmt                        # tensor cores on the GPU path
