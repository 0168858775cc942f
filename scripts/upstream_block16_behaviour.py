"""Measure how upstream SGLang's block-16 quantizer behaves on this machine, against the oracle.

Runs the real `FP4MXBlock16KVQuantizeUtil` from the sglang wheel (see `tests/_upstream.py`)
compiled (as SGLang runs it) and eager, on the device given, and records:

* byte mismatches of compiled upstream vs `nvfp4_kvcache` on random fp32/bf16/fp16 inputs;
* byte mismatches of eager upstream vs compiled upstream (how often eager bf16/fp16 picks another
  scale), with one worked example;
* what upstream writes for blocks containing NaN, +inf and -inf (scale byte, codes, decoded value);
* `ceil(log2(y))` at values just above powers of two, on the device, vs the oracle's rule.

Usage:

```bash
python scripts/upstream_block16_behaviour.py --device cpu  --out docs/data/format/block16_cpu.json
python scripts/upstream_block16_behaviour.py --device cuda --out docs/data/format/block16_cuda.json
```
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _upstream import SGLANG_VERSION, load_kvfp4_tensor  # noqa: E402
from nvfp4_kvcache.recipes.fp4_mx_block16 import ceil_log2_f32  # noqa: E402
from nvfp4_kvcache.sglang import FP4MXBlock16KVQuantizeUtil as Oracle  # noqa: E402
from provenance import command_line  # noqa: E402


def log(msg: str) -> None:
    print(f"[block16] {msg}", flush=True)


def random_input(shape, dtype, device, gen):
    b = shape[0]
    spread = 12 if dtype == torch.float16 else 40  # keep fp16 finite
    x = torch.randn(shape, generator=gen) * torch.exp2(torch.randint(-spread // 2, spread // 2, (b, 1, 1), generator=gen).float())
    return x.to(dtype).to(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", type=int, default=256, help="tokens per random tensor (x 8 heads x 128)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    up = load_kvfp4_tensor().FP4MXBlock16KVQuantizeUtil
    compiled_q = up.batched_quantize
    eager_q = compiled_q._torchdynamo_orig_callable
    gen = torch.Generator().manual_seed(0)
    result = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
        "device_type": dev.type,
        "versions": {"torch": torch.__version__, "sglang_wheel": SGLANG_VERSION, "python": platform.python_version()},
        "date": datetime.date.today().isoformat(),
        "command": command_line("upstream_block16_behaviour.py", sys.argv[1:]),
    }

    rows = []
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = random_input((args.tokens, 8, 128), dtype, dev, gen)
        p_c, s_c = compiled_q(x)
        p_e, s_e = eager_q(x)
        p_o, s_o = Oracle.batched_quantize(x)
        row = {
            "dtype": str(dtype).removeprefix("torch."),
            "blocks": s_c.numel(),
            "compiled_vs_oracle_scale_mismatches": int((s_c != s_o).sum()),
            "compiled_vs_oracle_packed_mismatches": int((p_c != p_o).sum()),
            "eager_vs_compiled_scale_mismatches": int((s_e != s_c).sum()),
            "eager_vs_compiled_packed_mismatches": int((p_e != p_c).sum()),
        }
        d_c = up.batched_dequantize(p_c, s_c)
        d_o = Oracle.batched_dequantize(p_c, s_c)
        row["dequantize_bit_mismatches"] = int((d_c.view(torch.int16) != d_o.view(torch.int16)).sum())
        row["dequantize_value_mismatches"] = int((d_c != d_o).sum())
        rows.append(row)
        log(row)
    result["random"] = rows

    example = torch.zeros(1, 1, 16, dtype=torch.bfloat16, device=dev)
    example[0, 0, 0] = 97.0
    result["eager_bf16_example"] = {
        "input": "bfloat16 block [97, 0 x 15]",
        "compiled": {"scale_byte": int(compiled_q(example)[1][0, 0]), "code0": int(compiled_q(example)[0][0, 0, 0] & 0xF)},
        "eager": {"scale_byte": int(eager_q(example)[1][0, 0]), "code0": int(eager_q(example)[0][0, 0, 0] & 0xF)},
        "oracle": {"scale_byte": int(Oracle.batched_quantize(example)[1][0, 0]), "code0": int(Oracle.batched_quantize(example)[0][0, 0, 0] & 0xF)},
    }
    log(result["eager_bf16_example"])

    specials = {}
    for name, value in (("nan", math.nan), ("+inf", math.inf), ("-inf", -math.inf)):
        x = torch.zeros(1, 1, 16, device=dev)
        x[0, 0, 0] = value
        x[0, 0, 1] = -3.0
        x[0, 0, 2] = 1.0
        entry = {}
        for mode, fn in (("compiled", compiled_q), ("eager", eager_q)):
            p, s = fn(x)
            d = up.batched_dequantize(p, s, dtype=torch.float32)
            entry[mode] = {
                "scale_byte": int(s[0, 0]),
                "codes_first4": [int(c) for c in torch.stack([p[0, 0, :2] & 0xF, p[0, 0, :2] >> 4], -1).flatten()],
                "decoded_first4": [str(float(v)) for v in d[0, 0, :4]],
            }
        p, s = Oracle.batched_quantize(x)
        entry["oracle"] = {"scale_byte": int(s[0, 0])}
        specials[name] = entry
        log(f"{name}: {entry}")
    result["non_finite_blocks"] = specials

    # every code under every scale byte: the whole decode table, as upstream computes it here
    codes = torch.arange(16, dtype=torch.uint8, device=dev)
    packed = (codes[1::2] << 4) | codes[0::2]  # 8 bytes = 16 codes = one block
    packed = packed.repeat(256, 1).reshape(1, 256, 8)
    scales = torch.arange(256, dtype=torch.int32, device=dev).to(torch.uint8).reshape(1, 256)
    table = {}
    for dtype in (torch.float32, torch.bfloat16):
        d_up = up.batched_dequantize(packed, scales, dtype=dtype)
        d_or = Oracle.batched_dequantize(packed, scales, dtype=dtype)
        same = (d_up == d_or) | (torch.isnan(d_up) & torch.isnan(d_or))
        bits = d_up.view(torch.int16 if dtype == torch.bfloat16 else torch.int32) == d_or.view(torch.int16 if dtype == torch.bfloat16 else torch.int32)
        table[str(dtype).removeprefix("torch.")] = {
            "entries": d_up.numel(),
            "value_mismatches": int((~same).sum()),
            "bit_mismatches_excluding_nan": int((~bits & ~(torch.isnan(d_up) & torch.isnan(d_or))).sum()),
            "value_mismatch_examples": [
                {"scale_byte": int(i // 16), "code": int(i % 16), "upstream": str(float(d_up.flatten()[i])), "oracle": str(float(d_or.flatten()[i]))}
                for i in (~same).flatten().nonzero().flatten()[:20].tolist()
            ],
            "bit_mismatch_codes": sorted({int(i % 16) for i in (~bits & ~(torch.isnan(d_up) & torch.isnan(d_or))).flatten().nonzero().flatten().tolist()}),
            "bit_mismatch_scale_bytes_for_nonzero_codes": sorted({int(i // 16) for i in (~bits & ~(torch.isnan(d_up) & torch.isnan(d_or))).flatten().nonzero().flatten().tolist() if i % 16 not in (0, 8)}),
            "upstream_code8_byte127": str(float(d_up[0, 127, 8])),
            "upstream_code8_sign_bit": bool(torch.signbit(d_up[0, 127, 8])),
        }
    result["decode_table"] = table
    log(table)

    ys = []
    for k in range(-34, 128):
        for m in range(0, 48):
            ys.append(math.ldexp(1 + m * 2**-23, k))
    y = torch.tensor(ys, dtype=torch.float32, device=dev)
    device_eager = torch.ceil(torch.log2(y))
    device_compiled = torch.compile(lambda t: torch.ceil(torch.log2(t)))(y)
    oracle = ceil_log2_f32(y.cpu()).to(dev)
    exact = torch.ceil(torch.log2(y.double())).float()
    result["ceil_log2_boundary"] = {
        "points": y.numel(),
        "eager_vs_oracle_mismatches": int((device_eager != oracle).sum()),
        "compiled_vs_oracle_mismatches": int((device_compiled != oracle).sum()),
        "oracle_vs_exact_math_mismatches": int((oracle != exact).sum()),
    }
    log(result["ceil_log2_boundary"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
