"""Element casts: torch's and ml_dtypes' conversions to E2M1, E4M3 and E8M0, value by value.

These are the building blocks a quantizer is tempted to use. The reference is the conversion the
recipes use ([`nvfp4_kvcache.formats`][nvfp4_kvcache.formats]): E2M1 and E4M3 round to nearest
even and **saturate** (infinity to the largest finite value, as PTX `cvt.rn.satfinite` does),
with the sign bit of the input (`-0.0` gives the negative zero). E8M0 has no cast in the oracle:
an MX scale is a rule on `amax` (floor for `mxfp4`, ceiling for `mxfp4_rceil`), so the E8M0 casts
are compared with the floor rule on the magnitude (what `mxfp4` needs of `amax / 4`), and the data
also counts how often they match the ceiling; E8M0 takes magnitudes, so its inputs are `|x|`.
NaN has no E2M1 code, and the recipes never cast a NaN to E4M3 (a NaN block's scale is written
directly), so codes for NaN inputs are unspecified.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch

from nvfp4_kvcache.exact import round_exact
from nvfp4_kvcache.formats import E2M1, E4M3, E8M0, MiniFloat
from nvfp4_kvcache.rounding import Rounding

from peerlab.base import Peer
from peerlab.inputs import DTYPES, INPUT_CLASSES

__all__ = ["TORCH_CASTS", "ML_DTYPES", "CastEntry", "reference_codes"]

WIDTH = 64
ROWS_FULL = 512


def _magnitude(fmt: MiniFloat, a: torch.Tensor) -> torch.Tensor:
    return fmt.encode_magnitude(torch.where(torch.isnan(a), 0.0, a.abs()), Rounding.NEAREST_EVEN)


def reference_codes(target: str, x: torch.Tensor) -> torch.Tensor:
    """The recipes' conversion of `x` (any float dtype) to codes of `target` (`int64`)."""
    x = x.double()
    if target == "E8M0":
        a = x.abs()
        safe = torch.where(torch.isfinite(a) & (a > 0), a, torch.ones_like(a))
        _, e = torch.frexp(safe)
        e = (e.long() - 1).clamp(E8M0.min_exponent, E8M0.max_exponent)
        e = torch.where(a == 0, torch.full_like(e, E8M0.min_exponent), e)
        return torch.where(torch.isfinite(a), e + E8M0.bias, torch.full_like(e, E8M0.nan_code))
    fmt = E2M1 if target == "E2M1" else E4M3
    sign = torch.where(torch.signbit(x), fmt.sign_bit, 0)
    code = sign | _magnitude(fmt, x).long()
    if target == "E4M3":
        code = torch.where(torch.isnan(x), sign | 0x7F, code)
    return code


def _decode(target: str, codes: torch.Tensor) -> torch.Tensor:
    fmt = {"E2M1": E2M1, "E4M3": E4M3, "E8M0": E8M0}[target]
    return torch.tensor([fmt.decode(int(c)) for c in range(256 if target != "E2M1" else 16)], dtype=torch.float64)[codes]


def _cast_input(cls: str, dtype: torch.dtype, target: str, rows: int, seed: int) -> torch.Tensor:
    """Values for a cast to `target` in the spirit of the input class."""
    gen = torch.Generator().manual_seed(seed)
    fmt = {"E2M1": E2M1, "E4M3": E4M3}.get(target)
    top = fmt.max_finite if fmt else 2.0**20
    table = torch.tensor(fmt.magnitudes if fmt else [2.0**k for k in range(-20, 21)], dtype=torch.float64)
    mids = (table[1:] + table[:-1]) / 2
    n = rows * WIDTH
    pick = lambda t: t[torch.randint(0, t.numel(), (n,), generator=gen)]  # noqa: E731
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).double()
    if cls == "normal":
        v = torch.randn(n, generator=gen, dtype=torch.float64) * top / 3
    elif cls == "heavy_tailed":
        z = torch.randn(n, generator=gen, dtype=torch.float64)
        v = z / torch.randn(n, 2, generator=gen, dtype=torch.float64).pow(2).mean(-1).sqrt() * top / 6
    elif cls == "ties":
        v = sign * pick(mids)
    elif cls == "zeros":
        v = sign * 0.0
    elif cls == "tiny_scales":
        low = fmt.min_subnormal if fmt else 2.0**-127
        v = sign * low * torch.exp2(torch.rand(n, generator=gen, dtype=torch.float64) * 4 - 3)
    elif cls == "pow2_minus_ulp":
        base = pick(table[1:]).to(dtype)
        up = torch.rand(n, generator=gen) < 0.5
        v = torch.where(up, torch.nextafter(base, torch.full_like(base, math.inf)),
                        torch.nextafter(base, torch.zeros_like(base))).double() * sign
    elif cls == "wide_range":
        v = sign * (1 + torch.rand(n, generator=gen, dtype=torch.float64)) * torch.exp2(
            torch.floor(torch.rand(n, generator=gen, dtype=torch.float64) * 40 - 30))
    elif cls == "nan":
        v = torch.randn(n, generator=gen, dtype=torch.float64) * top / 3
        v[::3] = math.nan
    elif cls == "inf":
        v = torch.randn(n, generator=gen, dtype=torch.float64) * top / 3
        v[::3] = sign[::3] * math.inf
        v[1::3] = sign[1::3] * top * (1 + torch.rand(n, generator=gen, dtype=torch.float64)[1::3])
    else:  # pragma: no cover
        raise ValueError(cls)
    v = v.reshape(rows, WIDTH).to(torch.float32).to(dtype)
    return v.abs() if target == "E8M0" else v


def _classes(target: str, x: torch.Tensor, ref: torch.Tensor, got: torch.Tensor) -> dict[str, int]:
    x = x.double()
    fmt = {"E2M1": E2M1, "E4M3": E4M3}.get(target)
    bad = ref != got
    top = fmt.max_finite if fmt else 2.0**127
    low = fmt.min_subnormal if fmt else 2.0**-127
    conds = {
        "cast/nan": torch.isnan(x),
        "cast/overflow": x.abs() > top,
        "cast/signed_zero": (x == 0),
        "cast/underflow": (x.abs() < low) & (x != 0),
    }
    if fmt:
        table = torch.tensor(fmt.magnitudes, dtype=torch.float64)
        mids = (table[1:] + table[:-1]) / 2
        conds["cast/tie"] = torch.isin(x.abs(), mids)
    else:
        conds["cast/between_powers_of_two"] = torch.ones_like(bad)
    out, left = {}, bad.clone()
    for name, c in conds.items():
        hit = left & c
        if hit.any():
            out[name] = int(hit.sum())
        left &= ~hit
    if left.any():
        out["cast/other"] = int(left.sum())
    return out


class CastEntry:
    """One cast (library x target format), compared value by value with the recipes' conversion."""

    def __init__(self, id: str, target: str, api: str, cast, note: str = "", other_rule: tuple[str, ...] = ()) -> None:
        self.id, self.target, self.api, self.cast, self.note = id, target, api, cast, note
        self.dtypes = tuple(DTYPES)
        self.recipe = f"{target} conversion"
        self.other_rule = other_rule   # classes where the cast follows another rule on purpose ("*": all)

    def run(self, x: torch.Tensor, g=None):
        return self.cast(x)

    def run_entry(self, rows: int, recorded: dict | None = None, reproducers: bool = True) -> dict:
        out = {"id": self.id, "recipe": self.recipe, "kind": "cast", "rule": self.rule(), "api": self.api,
               "source": "", "global_scale": None, "order": None, "order_formula": None,
               "dtypes": list(self.dtypes), "note": self.note, "status": "ran", "results": []}
        reps = {}
        for dname, dtype in DTYPES.items():
            for cls in INPUT_CLASSES:
                seed = 7000 + 100 * list(INPUT_CLASSES).index(cls) + list(DTYPES).index(dname)
                x = _cast_input(cls, dtype, self.target, ROWS_FULL, seed)[:rows]
                row = {"dtype": dname, "input_class": cls}
                try:
                    got = self.cast(x).long()
                except Exception as e:  # noqa: BLE001 - recorded: no such cast
                    row.update(status="refused", verdict="refused", error=f"{type(e).__name__}: {str(e)[:200]}")
                    out["results"].append(row)
                    continue
                ref = reference_codes(self.target, x)
                ref_v, got_v = _decode(self.target, ref), _decode(self.target, got)
                same_v = (ref_v == got_v) | (torch.isnan(ref_v) & torch.isnan(got_v))
                bad = ref != got
                counts = {"elements": x.numel(), "blocks": 0, "codes": int(bad.sum()), "scales": 0,
                          "decoded": int((~same_v).sum())}
                classes = _classes(self.target, x, ref, got)
                decided = self._decide(x, ref, got)
                row.update(status="ran", global_scale=None, counts=counts, classes=classes, decided=decided)
                row["verdict"] = ("agrees" if counts["codes"] == 0 else "same_values" if counts["decoded"] == 0
                                  else "different_rule" if ("*" in self.other_rule or set(classes) <= set(self.other_rule))
                                  else _verdict(decided))
                idx = bad.flatten().nonzero().flatten()
                row["rows"] = [{"index": int(i), "input": float(x.flatten()[i]), "expected_code": int(ref.flatten()[i]),
                                "actual_code": int(got.flatten()[i]), "expected_value": float(ref_v.flatten()[i]),
                                "actual_value": float(got_v.flatten()[i])}
                               for i in idx[torch.linspace(0, idx.numel() - 1, min(6, idx.numel())).long()].tolist()] if idx.numel() else []
                if self.target == "E8M0":
                    ceil = self._ceil(x)
                    row["matches_ceil_rule"] = int((ceil == got).sum())
                out["results"].append(row)
                for name in classes:
                    if name not in reps:
                        mask = self._class_mask(name, x, ref, got)
                        i = int(mask.flatten().nonzero()[0])
                        reps[name] = {"class": name, "dtype": dname, "value": float(x.flatten()[i]),
                                      "oracle": int(ref.flatten()[i]), "peer": int(got.flatten()[i]),
                                      "from": {"dtype": dname, "input_class": cls}}
        if reproducers:
            out["reproducers"] = reps
        return out

    def rerun_reproducer(self, rep: dict) -> dict:
        """The recorded value cast again: `{"oracle": code, "peer": code}` now."""
        x = torch.tensor([[float(rep["value"])]], dtype=torch.float32).to(DTYPES[rep["dtype"]])
        return {"oracle": int(reference_codes(self.target, x)[0, 0]), "peer": int(self.cast(x).long()[0, 0])}

    def rule(self) -> str:
        return {"E2M1": "round to nearest even, saturating at +-6, sign of the input",
                "E4M3": "round to nearest even, saturating at +-448 (inf too), sign of the input; NaN -> NaN",
                "E8M0": "floor of log2 |x| (mxfp4's rule on amax / 4), clamped to [-127, 127]; 0 -> byte 0; "
                        "NaN, inf -> 0xFF"}[self.target]

    def _ceil(self, x: torch.Tensor) -> torch.Tensor:
        a = x.double().abs()
        safe = torch.where(torch.isfinite(a) & (a > 0), a, torch.ones_like(a))
        m, e = torch.frexp(safe)
        e = (e.long() - 1) + (m != 0.5).long()
        e = e.clamp(E8M0.min_exponent, E8M0.max_exponent)
        e = torch.where(a == 0, torch.full_like(e, E8M0.min_exponent), e)
        return torch.where(torch.isfinite(a), e + E8M0.bias, torch.full_like(e, E8M0.nan_code))

    def _class_mask(self, name, x, ref, got):
        bad = ref != got
        xd = x.double()
        fmt = {"E2M1": E2M1, "E4M3": E4M3}.get(self.target)
        top = fmt.max_finite if fmt else 2.0**127
        low = fmt.min_subnormal if fmt else 2.0**-127
        prior = {"cast/nan": torch.isnan(xd), "cast/overflow": xd.abs() > top, "cast/signed_zero": xd == 0,
                 "cast/underflow": (xd.abs() < low) & (xd != 0)}
        if name in prior:
            return bad & prior[name]
        taken = torch.zeros_like(bad)
        for c in prior.values():
            taken |= c
        if name == "cast/tie" and fmt:
            table = torch.tensor(fmt.magnitudes, dtype=torch.float64)
            return bad & ~taken & torch.isin(xd.abs(), (table[1:] + table[:-1]) / 2)
        return bad & ~taken

    def _decide(self, x: torch.Tensor, ref: torch.Tensor, got: torch.Tensor) -> dict:
        tally = {"peer": 0, "oracle": 0, "both": 0, "neither": 0, "unspecified": 0}
        idx = (ref != got).flatten().nonzero().flatten()[:256].tolist()
        xf = x.double().flatten()
        for i in idx:
            v = float(xf[i])
            if math.isnan(v):
                tally["unspecified"] += 1
                continue
            if self.target == "E8M0":
                exact = int(reference_codes("E8M0", torch.tensor([v]))[0])   # frexp is exact
            elif math.isinf(v):
                fmt = E2M1 if self.target == "E2M1" else E4M3
                exact = (fmt.sign_bit if v < 0 else 0) | (len(fmt.magnitudes) - 1)
            else:
                fmt = E2M1 if self.target == "E2M1" else E4M3
                mag, _, _ = round_exact(abs(Fraction(v)), fmt, Rounding.NEAREST_EVEN)
                exact = (fmt.sign_bit if math.copysign(1.0, v) < 0 else 0) | mag
            o, p = int(ref.flatten()[i]) == exact, int(got.flatten()[i]) == exact
            tally["both" if o and p else "oracle" if o else "peer" if p else "neither"] += 1
        tally["decided_of"] = int((ref != got).sum())
        return tally


def _verdict(decided: dict) -> str:
    specified = sum(decided[k] for k in ("peer", "oracle", "both", "neither"))
    if specified == 0:
        return "unspecified"
    if decided["peer"] == decided["both"] == 0 and decided["oracle"] > 0:
        return "peer_deviates"
    if decided["oracle"] == decided["both"] == 0 and decided["peer"] > 0:
        return "oracle_deviates"
    return "mixed"


def _torch(dtype_name: str):
    def cast(x: torch.Tensor) -> torch.Tensor:
        dt = getattr(torch, dtype_name)
        out = x.to(dt)
        return out.view(torch.uint8)
    return cast


def _ml(name: str):
    def cast(x: torch.Tensor) -> torch.Tensor:
        import ml_dtypes
        if x.dtype == torch.bfloat16:
            arr = x.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            arr = x.numpy()
        out = arr.astype(getattr(ml_dtypes, name)).view(np.uint8)
        return torch.from_numpy(out.copy())
    return cast


E8M0_NOTE = ("the cast rounds to the nearest power of two (1.5 * 2**k and above go up); mxfp4 needs the floor "
             "and mxfp4_rceil the ceiling, so an MX scale built with this cast is neither recipe's")


def _load_torch() -> list:
    return [
        CastEntry("torch_casts/e2m1", "E2M1", "x.to(torch.float4_e2m1fn_x2)", _torch("float4_e2m1fn_x2"),
                  note="torch has the packed dtype but no conversion to it"),
        CastEntry("torch_casts/e4m3", "E4M3", "x.to(torch.float8_e4m3fn).view(torch.uint8)", _torch("float8_e4m3fn")),
        CastEntry("torch_casts/e8m0", "E8M0", "x.to(torch.float8_e8m0fnu).view(torch.uint8)", _torch("float8_e8m0fnu"),
                  note=E8M0_NOTE, other_rule=("*",)),
    ]


def _load_ml() -> list:
    import ml_dtypes  # noqa: F401
    return [
        CastEntry("ml_dtypes/e2m1", "E2M1", "np.asarray(x).astype(ml_dtypes.float4_e2m1fn).view(np.uint8)",
                  _ml("float4_e2m1fn")),
        CastEntry("ml_dtypes/e4m3", "E4M3", "np.asarray(x).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)",
                  _ml("float8_e4m3fn"), other_rule=("cast/overflow",),
                  note="overflow (|x| > 448 and +-inf) gives NaN: the non-saturating conversion, where the recipes saturate"),
        CastEntry("ml_dtypes/e8m0", "E8M0", "np.asarray(x).astype(ml_dtypes.float8_e8m0fnu).view(np.uint8)",
                  _ml("float8_e8m0fnu"), note=E8M0_NOTE, other_rule=("*",)),
    ]


TORCH_CASTS = Peer("torch_casts", "torch", _load_torch, "https://github.com/pytorch/pytorch")
ML_DTYPES = Peer("ml_dtypes", "ml_dtypes", _load_ml, "https://github.com/jax-ml/ml_dtypes")
