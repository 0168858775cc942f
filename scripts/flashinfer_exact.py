"""Decide an NVFP4 byte difference by exact rational arithmetic (`fractions.Fraction`).

When FlashInfer's writer and the oracle disagree on a block, neither is right by majority. This
module computes, for one block of 16 inputs and a global scale, the bytes of four models with
every intermediate an exact rational and every rounding written out:

* `exact`: the NVFP4 definition with no intermediate rounding. Block scale
  `sf = E4M3_RNE(amax / (6 g))` (saturating at 448; below `2**-10` it is 0), element code
  `E2M1_RNE(|x| / (sf g))` with the sign of `x` (magnitude 0 when `sf = 0`). Infinite inputs
  saturate (`amax = inf` gives `sf = 448`, an infinite element code 7).
* `oracle`: the oracle's documented arithmetic (`nvfp4_kvcache.recipes.nvfp4`):
  `s = fl(fl(amax * fl(1/6)) * fl(1/g))`, `r = fl(1 / fl(sf g))`, code of `fl(x r)`.
* `flashinfer_ieee`: FlashInfer 0.7.4's writer formula (`nvfp4_append_quantize_block` in
  `include/flashinfer/page.cuh`) with IEEE-rounded operations: `s = fl(amax / fl(6 g))`,
  `r = fl(1 / fl(sf g))`, code of `fl(x r)`. The MLA writer's `precise_rounding` form is
  `flashinfer_precise`: `s = fl(amax * fl(1 / fl(6 g)))`, the rest the same.
* the 4-over-6 variants of `exact` and `flashinfer_ieee` (`FLASHINFER_NVFP4_APPEND_4OVER6`): the
  block scale mapping `amax` to 4 instead of 6 replaces the first when its squared error over the
  block is strictly smaller.

`fl` is round-to-nearest-even to `float32`, subnormals included (no flush to zero). A GPU byte
that matches `flashinfer_ieee` but not `exact` differs because of FlashInfer's formula; one that
matches neither comes from the instructions (`-use_fast_math`: approximate division and
reciprocal, flush-to-zero), which this module names but does not model.

Usage:

```text
python scripts/flashinfer_exact.py decide REPRODUCER.json     # print the verdict of one case
```
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from nvfp4_kvcache.formats import E2M1, E4M3  # noqa: E402

INF = math.inf
E2M1_GRID = tuple(Fraction(v) for v in E2M1.magnitudes)
E4M3_GRID = tuple(Fraction(v) for v in E4M3.magnitudes)
BLOCK = 16

# IEEE binary formats as (precision incl. hidden bit, emin, emax)
FLOAT32 = (24, -126, 127)
BFLOAT16 = (8, -126, 127)
FLOAT16 = (11, -14, 15)
FORMATS = {"float32": FLOAT32, "bfloat16": BFLOAT16, "float16": FLOAT16}


# -- rounding -------------------------------------------------------------------------------------
def round_binary(q: Fraction | float, fmt: tuple[int, int, int] = FLOAT32) -> Fraction | float:
    """Round an exact value to the nearest value of a binary format, ties to even.

    Subnormals are kept (no flush to zero); values past the largest finite round to `+-inf`
    the IEEE way (at or beyond the midpoint to `2**(emax+1)`). Infinite input passes through.

    Args:
        q: a `Fraction`, or `+-inf`.
        fmt: `(precision, emin, emax)`; `FLOAT32`, `BFLOAT16`, `FLOAT16`.

    Returns:
        A `Fraction`, or `+-inf` (a Python float).

    Examples:
        >>> round_binary(Fraction(1, 3)) == Fraction(11184811, 2**25)
        True
        >>> round_binary(Fraction(3, 2**150))      # between the two smallest subnormals: to even
        Fraction(1, 356811923176489970264571492362373784095686656)
    """
    if isinstance(q, float):
        if math.isinf(q):
            return q
        q = Fraction(q)
    if q == 0:
        return Fraction(0)
    prec, emin, emax = fmt
    sign = -1 if q < 0 else 1
    a = abs(q)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    e = max(e, emin)                       # subnormal range shares emin's quantum
    quantum = Fraction(2) ** (e - prec + 1)
    n, rem = divmod(a, quantum)
    n = int(n)
    if rem * 2 > quantum or (rem * 2 == quantum and n % 2):
        n += 1
    value = n * quantum
    top = (2 - Fraction(2) ** (1 - prec)) * Fraction(2) ** emax
    if value > top:
        return sign * INF
    return sign * value


def to_fraction(x: float) -> Fraction | float:
    """A float (any finite value, or `+-inf`) as an exact `Fraction` (`inf` passes through)."""
    return x if math.isinf(x) else Fraction(x)


def nearest_even_code(q: Fraction | float, grid: tuple[Fraction, ...]) -> int:
    """Index of the nearest grid value to `|q|`, ties to the even index, saturating at the top.

    The grids are magnitude tables indexed by code (E2M1, E4M3), so the index is the magnitude
    code and an even index has an even mantissa.

    Examples:
        >>> nearest_even_code(Fraction(1, 4), E2M1_GRID), nearest_even_code(Fraction(3, 4), E2M1_GRID)
        (0, 2)
        >>> nearest_even_code(INF, E4M3_GRID)
        126
    """
    a = abs(q)
    if a == INF or a >= grid[-1]:
        return len(grid) - 1
    lo = max(i for i, v in enumerate(grid) if v <= a)
    hi = lo + 1
    d_lo, d_hi = a - grid[lo], grid[hi] - a
    if d_hi < d_lo or (d_hi == d_lo and hi % 2 == 0):
        return hi
    return lo


def _sign(x: float) -> int:
    return E2M1.sign_bit if math.copysign(1.0, x) < 0 else 0


# -- one block, several models ----------------------------------------------------------------------
def _codes(xs, recip):
    """Codes of `fl(x * recip)` (recip `None`: magnitude 0), sign of `x`."""
    out = []
    for x in xs:
        if recip is None:
            mag = 0
        else:
            y = round_binary(to_fraction(x) * recip) if not math.isinf(x) else INF
            mag = nearest_even_code(y, E2M1_GRID)
        out.append(_sign(x) | mag)
    return out


def _exact_codes(xs, sf: Fraction, g: Fraction):
    out = []
    for x in xs:
        if sf == 0:
            mag = 0
        elif math.isinf(x):
            mag = len(E2M1_GRID) - 1
        else:
            mag = nearest_even_code(Fraction(x) / (sf * g), E2M1_GRID)
        out.append(_sign(x) | mag)
    return out


def _amax(xs) -> Fraction | float:
    m = max(abs(to_fraction(x)) for x in xs)
    return m


def _check_block(xs, g):
    if len(xs) != BLOCK:
        raise ValueError(f"a block has {BLOCK} values, got {len(xs)}")
    if any(math.isnan(x) for x in xs):
        raise ValueError("NaN has no E2M1 code: a block with NaN is decided by policy, not by arithmetic")
    if not (math.isfinite(g) and g > 0):
        raise ValueError(f"global scale must be positive and finite, got {g}")


def exact_block(xs: list[float], g: float, *, four_over_six: bool = False) -> tuple[int, list[int]]:
    """`(scale byte, 16 codes)` by the NVFP4 definition, with no intermediate rounding.

    Examples:
        >>> exact_block([6.0] + [3.0] * 15, 1.0)[0] == 0x38     # amax / 6 = 1.0 exactly
        True
    """
    _check_block(xs, g)
    gq, amax = Fraction(g), _amax(xs)
    s = INF if amax == INF else amax / (6 * gq)
    i6 = nearest_even_code(s, E4M3_GRID)
    if not four_over_six:
        return i6, _exact_codes(xs, E4M3_GRID[i6], gq)
    s4 = INF if amax == INF else amax / (4 * gq)
    i4 = nearest_even_code(s4, E4M3_GRID)
    err6 = _exact_error(xs, E4M3_GRID[i6], gq)
    err4 = _exact_error(xs, E4M3_GRID[i4], gq)
    i = i4 if err4 < err6 else i6
    return i, _exact_codes(xs, E4M3_GRID[i], gq)


def _exact_error(xs, sf, g):
    if sf == 0:
        return sum(Fraction(x) ** 2 for x in xs if not math.isinf(x))
    total = Fraction(0)
    for x, c in zip(xs, _exact_codes(xs, sf, g)):
        if math.isinf(x):
            return INF
        total += (E2M1_GRID[c & E2M1.magnitude_mask] * sf * g - abs(Fraction(x))) ** 2
    return total


def oracle_block(xs: list[float], g: float) -> tuple[int, list[int]]:
    """`(scale byte, codes)` by the oracle's documented `float32` product form."""
    _check_block(xs, g)
    gq, amax = Fraction(g), _amax(xs)
    rcp6, rg = round_binary(Fraction(1, 6)), round_binary(1 / gq)
    s = INF if amax == INF else round_binary(round_binary(amax * rcp6) * rg)
    i = nearest_even_code(s, E4M3_GRID)
    sf = E4M3_GRID[i]
    recip = None if sf == 0 else round_binary(1 / round_binary(sf * gq))
    return i, _codes(xs, recip)


def flashinfer_block(xs: list[float], g: float, *, precise: bool = False,
                     four_over_six: bool = False, fma: bool = False) -> tuple[int, list[int]]:
    """`(scale byte, codes)` by FlashInfer's writer formula with IEEE-rounded operations.

    Args:
        xs: the block's 16 inputs (as `float32` values).
        g: the global (decode) scale.
        precise: the MLA writer's form, `s = fl(amax * fl(1 / fl(6 g)))`; else `fl(amax / fl(6 g))`.
        four_over_six: also try the scale `E4M3(fl(s * 1.5))` and keep it on a strictly smaller
            `float32` squared error, summed in element order.
        fma: in that error, contract `mag * sf * g - |v|` and `sum + diff * diff` into fused
            multiply-adds (what `-fmad=true`, part of `-use_fast_math`, allows the compiler).
    """
    _check_block(xs, g)
    gq, amax = Fraction(g), _amax(xs)
    six_g = round_binary(6 * gq)
    if amax == 0:
        s = Fraction(0)
    elif amax == INF:
        s = INF
    elif precise:
        s = round_binary(amax * round_binary(1 / six_g))
    else:
        s = round_binary(amax / six_g)
    i = nearest_even_code(s, E4M3_GRID)
    if four_over_six:
        s4 = INF if s == INF else round_binary(s * Fraction(3, 2))
        i4 = nearest_even_code(s4, E4M3_GRID)
        if _fi_error(xs, E4M3_GRID[i4], gq, precise, fma) < _fi_error(xs, E4M3_GRID[i], gq, precise, fma):
            i = i4
    sf = E4M3_GRID[i]
    recip = None if (sf == 0 or amax == 0) else round_binary(1 / round_binary(sf * gq))
    return i, _codes(xs, recip)


def _fi_error(xs, sf, g, precise, fma):
    """The 4-over-6 error lambda of `page.cuh`, in `float32`.

    With `sf = 0` the kernel's scale is `1 / 0 = inf`: a non-zero input then gets level 7 and a
    zero input (`0 * inf = NaN`) level 0, and every `diff` is `0 - |v|`; this is followed here.
    """
    prod = round_binary(sf * g)
    scale = INF if prod == 0 else round_binary(1 / prod)
    total = Fraction(0)
    for x in xs:
        if math.isinf(x):
            return INF
        xq = Fraction(x)
        if scale == INF:
            level = 0 if xq == 0 else len(E2M1_GRID) - 1
        else:
            level = nearest_even_code(round_binary(xq * scale), E2M1_GRID)
        mag = E2M1_GRID[level]
        if fma:
            diff = round_binary(round_binary(mag * sf) * g - abs(xq))
            total = round_binary(diff * diff + total)
        else:
            diff = round_binary(round_binary(round_binary(mag * sf) * g) - abs(xq))
            total = round_binary(total + round_binary(diff * diff))
        if total == INF:
            return INF
    return total


# -- verdicts ---------------------------------------------------------------------------------------
MODELS = {
    "exact": lambda xs, g, v: exact_block(xs, g, four_over_six=v == "4over6"),
    "oracle": lambda xs, g, v: oracle_block(xs, g),
    "flashinfer_ieee": lambda xs, g, v: flashinfer_block(xs, g, precise=v == "mla", four_over_six=v == "4over6"),
    "flashinfer_ieee_fma": lambda xs, g, v: flashinfer_block(xs, g, four_over_six=True, fma=True),
}


def model_bytes(xs: list[float], g: float, variant: str = "standard") -> dict[str, tuple[int, list[int]]]:
    """Every model's `(scale byte, codes)` for a block (`variant`: `standard`, `mla`, `4over6`)."""
    names = ["exact", "flashinfer_ieee"] + (["oracle"] if variant != "4over6" else ["flashinfer_ieee_fma"])
    return {name: MODELS[name](xs, g, variant) for name in names}


def decide(xs: list[float], g: float, gpu: tuple[int, list[int]], oracle: tuple[int, list[int]],
           variant: str = "standard") -> dict:
    """Which models the GPU's and the oracle's bytes for one block agree with, and the verdict.

    Args:
        xs: the 16 inputs (`float32` values; NaN makes the block undecidable by arithmetic).
        g: the global scale.
        gpu: FlashInfer's `(scale byte, codes)` for the block.
        oracle: the oracle's `(scale byte, codes)`.
        variant: `standard`, `mla` or `4over6`.

    Returns:
        `{"verdict", "gpu_matches", "oracle_matches", "models"}`; the verdict is one of
        `"flashinfer right"` (GPU matches `exact`, the oracle does not), `"oracle right"`, `"both
        right"`, `"neither right"`, or `"undefined: NaN in block"`.
    """
    gpu = (gpu[0], list(gpu[1]))
    oracle = (oracle[0], list(oracle[1]))
    if any(math.isnan(x) for x in xs):
        return {"verdict": "undefined: NaN in block", "gpu_matches": [], "oracle_matches": [], "models": {}}
    models = model_bytes(xs, g, variant)
    gm = sorted(n for n, b in models.items() if (b[0], list(b[1])) == gpu)
    om = sorted(n for n, b in models.items() if (b[0], list(b[1])) == oracle)
    g_ok, o_ok = "exact" in gm, "exact" in om
    verdict = {(True, False): "flashinfer right", (False, True): "oracle right",
               (True, True): "both right", (False, False): "neither right"}[(g_ok, o_ok)]
    return {"verdict": verdict, "gpu_matches": gm, "oracle_matches": om,
            "models": {n: {"scale_byte": b[0], "codes": b[1]} for n, b in models.items()}}


def dequant_values(codes: list[int], scale_byte: int, g: float, out: str = "bfloat16") -> dict[str, list]:
    """Decoded values of one block in `out` (`bfloat16`/`float16`) by two models.

    * `exact`: `E2M1[code] * sf * g` computed exactly, rounded once to `out`;
    * `f32_then_cast`: `fl(fl(E2M1[code] * sf) * g)` in `float32`, then rounded to `out`: the
      oracle's and FlashInfer's dequantize arithmetic (`fp4_kv_dequantization.cu`) without
      flush-to-zero.

    A NaN scale byte (`0x7F`/`0xFF`) decodes every element to NaN (returned as `nan`).
    """
    mag = scale_byte & 0x7F
    if mag in E4M3.nan_magnitude_codes:
        return {"exact": [math.nan] * len(codes), "f32_then_cast": [math.nan] * len(codes)}
    sf, gq, fmt = E4M3_GRID[mag], Fraction(g), FORMATS[out]
    exact, f32 = [], []
    for c in codes:
        e = E2M1_GRID[c & E2M1.magnitude_mask] * (-1 if c & E2M1.sign_bit else 1)
        neg = bool(c & E2M1.sign_bit)
        ex = round_binary(e * sf * gq, fmt)
        fl = round_binary(round_binary(round_binary(e * sf) * gq), fmt)
        exact.append(float(ex) if ex != 0 or not neg else -0.0)
        f32.append(float(fl) if fl != 0 or not neg else -0.0)
    return {"exact": exact, "f32_then_cast": f32}


def fp8_models(x: float, scale: float) -> dict[str, int]:
    """FP8 E4M3 byte of the MLA rope part for one input by two models: `exact`
    (`E4M3_RNE(x / scale)`, saturating) and `flashinfer_ieee` (`fl(x * fl(1 / scale))` first,
    the kernel's `__frcp_rn` form)."""
    sign = 0x80 if math.copysign(1.0, x) < 0 else 0
    if math.isnan(x):
        return {"exact": 0x7F, "flashinfer_ieee": 0x7F}
    sq = Fraction(scale)
    xq = to_fraction(x)
    ex = INF if xq in (INF, -INF) else abs(xq) / sq
    fi = INF if xq in (INF, -INF) else abs(round_binary(xq * round_binary(1 / sq)))
    return {"exact": sign | nearest_even_code(ex, E4M3_GRID), "flashinfer_ieee": sign | nearest_even_code(fi, E4M3_GRID)}


def f32_hex(x: float) -> str:
    """The `float32` bit pattern of a value, as 8 hex digits (NaN payloads and `-0.0` kept)."""
    return struct.pack(">f", x).hex()


def from_f32_hex(h: str) -> float:
    """Inverse of [`f32_hex`][flashinfer_exact.f32_hex]."""
    return struct.unpack(">f", bytes.fromhex(h))[0]


def decide_reproducer(rep: dict) -> dict:
    """Decide a stored reproducer (the conformance data's format: inputs and `g` as `float32` hex)."""
    xs = [from_f32_hex(h) for h in rep["inputs_f32_hex"]]
    g = from_f32_hex(rep["global_scale_f32_hex"])
    return decide(xs, g, (rep["flashinfer"]["scale_byte"], rep["flashinfer"]["codes"]),
                  (rep["oracle"]["scale_byte"], rep["oracle"]["codes"]), rep.get("variant", "standard"))


SCAN_GLOBAL_SCALES = (1.0, 0.5, 0.37, 1 / 3, 0.1, 1 / 448, 1 / 2688)
"""Global scales of the formula scan: powers of two, 24-bit values, and the two conventions'
divisors' reciprocals (what `amax / 448` and `amax / (6 * 448)` give for `amax = 1`)."""


def formula_scan(blocks: int = 1 << 17, seed: int = 0, decide_max: int = 200) -> dict:
    """Where FlashInfer's division form and the oracle's product form pick different bytes.

    On `blocks` bfloat16 blocks (normal values, each block scaled by a random power of two in
    `2**-24 .. 2**16`) and each global scale of `SCAN_GLOBAL_SCALES`, computes in IEEE `float32`
    the oracle's bytes (`NVFP4.quantize`), FlashInfer's paged writer formula
    (`s = amax / fl(6 g)`) and its MLA writer formula (`s = amax * fl(1 / fl(6 g))`), counts the
    blocks where they differ, and decides up to `decide_max` of them by exact arithmetic.

    Returns:
        A JSON-ready dict: per global scale the counts, the verdicts and one reproducer.
    """
    import torch

    from nvfp4_kvcache.packing import unpack_nibbles
    from nvfp4_kvcache.recipes import NVFP4
    from nvfp4_kvcache.rounding import Rounding

    gen = torch.Generator().manual_seed(seed)
    e = torch.randint(-24, 17, (blocks, 1), generator=gen).float()
    x = (torch.randn(blocks, 16, generator=gen) * torch.pow(2.0, e)).to(torch.bfloat16).float()

    def division_form(g, precise):
        gt = torch.tensor(g, dtype=torch.float32)
        amax = x.abs().amax(-1)
        six_g = 6.0 * gt
        s = amax * (1.0 / six_g) if precise else amax / six_g
        b = E4M3.encode_magnitude(s, Rounding.NEAREST_EVEN)
        sf = E4M3.decode_tensor(b)
        r = torch.where((sf > 0) & (amax > 0), 1.0 / (sf * gt), torch.zeros_like(sf))
        mag = E2M1.encode_magnitude((x * r[:, None]).abs(), Rounding.NEAREST_EVEN)
        return b, torch.where(torch.signbit(x), E2M1.sign_bit, 0).to(torch.uint8) | mag

    out = {"blocks": blocks, "seed": seed, "dtype": "bfloat16", "rows": []}
    for g in SCAN_GLOBAL_SCALES:
        g = float(torch.tensor(g, dtype=torch.float32))
        q = NVFP4.quantize(x, torch.tensor(g, dtype=torch.float32))
        ob, oc = q.scales[:, 0], unpack_nibbles(q.packed)
        row = {"global_scale": g, "global_scale_f32_hex": f32_hex(g)}
        for name, precise in (("flashinfer_division", False), ("flashinfer_precise", True)):
            fb, fc = division_form(g, precise)
            diff = ((fb != ob) | (fc != oc).any(-1)).nonzero().flatten()
            verdicts, rep = {}, None
            for i in diff[:decide_max].tolist():
                xs = x[i].tolist()
                d = decide(xs, g, (int(fb[i]), fc[i].tolist()), (int(ob[i]), oc[i].tolist()),
                           "mla" if precise else "standard")
                verdicts[d["verdict"]] = verdicts.get(d["verdict"], 0) + 1
                if rep is None:
                    rep = {"inputs_f32_hex": [f32_hex(v) for v in xs], "global_scale_f32_hex": f32_hex(g),
                           "variant": "mla" if precise else "standard",
                           "flashinfer": {"scale_byte": int(fb[i]), "codes": fc[i].tolist()},
                           "oracle": {"scale_byte": int(ob[i]), "codes": oc[i].tolist()}, "verdict": d["verdict"]}
            row[name] = {"differing_blocks": int(diff.numel()), "scale_byte_diffs": int((fb != ob).sum()),
                         "decided": sum(verdicts.values()), "verdicts": verdicts, "reproducer": rep}
        out["rows"].append(row)
    return out


def render_scan_markdown(res: dict) -> str:
    """The scan's table for the Pool chapter, rendered at build time (`flashinfer_formula` in
    `scripts/peer_tables.py`)."""
    lines = [f"Blocks that differ from the oracle's bytes, of {res['blocks']:,} bfloat16 blocks "
             f"({res['device']}, torch {res['versions']['torch']}, {res['date'][:10]}; `{res['command']}`); "
             "verdicts by exact arithmetic on up to 200 of them:", "",
             "| global scale g | division form (paged writer) | verdicts | reciprocal form (MLA writer) | verdicts |",
             "|---:|---:|---|---:|---|"]
    fmt = lambda v: ", ".join(f"{k}: {n}" for k, n in sorted(v.items())) or "-"  # noqa: E731
    for r in res["rows"]:
        d, p = r["flashinfer_division"], r["flashinfer_precise"]
        lines.append(f"| {r['global_scale']:.6g} | {d['differing_blocks']} | {fmt(d['verdicts'])} | "
                     f"{p['differing_blocks']} | {fmt(p['verdicts'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("decide", help="decide one reproducer (a JSON file or '-' for stdin)")
    d.add_argument("path")
    sc = sub.add_parser("scan", help="CPU: where FlashInfer's writer formulas and the oracle's differ")
    sc.add_argument("--blocks", type=int, default=1 << 17)
    sc.add_argument("--out", default=str(ROOT / "docs" / "data" / "peers" / "flashinfer_formula.json"))
    args = ap.parse_args(argv)
    if args.cmd == "scan":
        import datetime as _dt
        import platform

        import torch

        res = formula_scan(args.blocks)
        res.update({"device": f"CPU ({platform.machine()})", "versions": {"torch": torch.__version__,
                    "python": platform.python_version()}, "flashinfer_source": "flashinfer-python 0.7.4, "
                    "include/flashinfer/page.cuh (nvfp4_append_quantize_block)",
                    "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "command": f"python scripts/flashinfer_exact.py scan --blocks {args.blocks}"})
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
        print(render_scan_markdown(res))
        for r in res["rows"]:
            print(r["global_scale"], {k: (v["differing_blocks"], v["verdicts"]) for k, v in r.items()
                                      if isinstance(v, dict) and "verdicts" in v})
        return 0
    rep = json.load(sys.stdin if args.path == "-" else open(args.path))
    print(json.dumps(decide_reproducer(rep), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
