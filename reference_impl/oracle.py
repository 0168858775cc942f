"""Check a candidate quantizer's output against the oracle, bit for bit, with a readable report.

[`assert_matches_oracle`][nvfp4_kvcache.oracle.assert_matches_oracle] is the one call a kernel
author needs in a test: give it the input and the candidate's packed bytes and scale bytes; it
quantizes the input with the oracle and compares **codes and scale bytes** with zero tolerance.
On a mismatch it raises [`OracleMismatch`][nvfp4_kvcache.oracle.OracleMismatch] (an
`AssertionError`, so pytest shows it as a failed assertion) whose message is the report of
[`compare_with_oracle`][nvfp4_kvcache.oracle.compare_with_oracle]:

* counts of differing codes and scale bytes, and of decoded values that differ;
* counts **per class** of mismatch: the scale byte differs, the code differs at an exact tie or a
  near-tie (the exact quotient within a few `float32` ulps of a midpoint), a signed zero, inside a
  NaN / infinite / all-zero block, or otherwise;
* one row per block whose scale byte differs, with both bytes and the scales they decode to;
* element rows sampled across the mismatching blocks (one class each first, then spread evenly,
  never just the first ten), each with the input, both codes and values, the quantization step
  there and a tie / near-tie flag;
* what each opt-in [`Policy`][nvfp4_kvcache.oracle.Policy] forgave, counted separately.

Packed data may come as `uint8` or as torch's `float4_e2m1fn_x2`; scales as `uint8` or as the
torch float8 dtype whose values are the recipe's (`float8_e4m3fn` for `nvfp4`,
`float8_e8m0fnu` for the MX recipes), checked byte by byte. For `nvfp4`, `order` names the
`float32` order of operations of the kernel under test
(see [`ORDERS`][nvfp4_kvcache.recipes.nvfp4.ORDERS]).

The [Cookbook](../cookbook.md) shows it on real candidates and on a peer library.

Examples:
    >>> import torch
    >>> from nvfp4_kvcache import quantize
    >>> from nvfp4_kvcache.oracle import assert_matches_oracle, compare_with_oracle
    >>> x = torch.randn(4, 64)
    >>> q = quantize(x, "mxfp4")
    >>> assert_matches_oracle("mxfp4", x, q.packed, q.scales)      # passes silently
    >>> bad = q.packed.clone(); bad[0, 0] ^= 0x1  # flip one bit of one code
    >>> report = compare_with_oracle("mxfp4", x, bad, q.scales)
    >>> report.ok, report.code_mismatches, report.scale_mismatches
    (False, 1, 0)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import torch

from nvfp4_kvcache.checks import check_uint8
from nvfp4_kvcache.formats import E2M1
from nvfp4_kvcache.packing import unpack_nibbles
from nvfp4_kvcache.recipes import Recipe, get_recipe
from nvfp4_kvcache.recipes.nvfp4 import get_order, nvfp4_with_order

__all__ = [
    "OracleMismatch",
    "MismatchReport",
    "Policy",
    "MISMATCH_CLASSES",
    "NEAR_TIE_ULPS",
    "compare_with_oracle",
    "assert_matches_oracle",
]

NEAR_TIE_ULPS = 4
"""A code mismatch is flagged as a near-tie when the exact quotient lies within this many `float32`
ulps of a midpoint between two E2M1 values (the reach of a different `float32` order of operations
is one or two ulps; see the Format chapter). Only a flag: the near-tie policy has its own `k`."""

MISMATCH_CLASSES: dict[str, str] = {
    "scale/nan_block": "scale byte differs in a block whose input holds a NaN",
    "scale/inf_block": "scale byte differs in a block holding +-inf (and no NaN)",
    "scale/zero_block": "scale byte differs in a block of zeros (+0.0 or -0.0)",
    "scale/tie": "scale byte differs where the exact block scale is halfway between two scale values",
    "scale/near_tie": "scale byte differs where the exact block scale is within NEAR_TIE_ULPS of such a midpoint",
    "scale/other": "scale byte differs otherwise",
    "codes/nan_block": "code differs inside a block whose input holds a NaN",
    "codes/inf_block": "code differs inside a block holding +-inf (and no NaN)",
    "codes/scale_differs": "code differs in a block whose scale byte differs too",
    "codes/signed_zero": "codes 0 and 8: +0 against -0",
    "codes/tie": "code differs where the exact quotient is halfway between two E2M1 values",
    "codes/near_tie": "code differs where the exact quotient is within NEAR_TIE_ULPS of such a midpoint",
    "codes/other": "code differs otherwise",
}
"""Every class a mismatch is counted in, with its meaning. Each mismatching scale byte (per block)
and each mismatching code (per element) falls in exactly one class, the first that applies."""

_TORCH_SCALE_DTYPES = tuple(
    getattr(torch, name) for name in ("float8_e4m3fn", "float8_e8m0fnu") if hasattr(torch, name)
)
_PACKED_DTYPES = tuple(getattr(torch, name) for name in ("float4_e2m1fn_x2",) if hasattr(torch, name))


class OracleMismatch(AssertionError):
    """Raised by [`assert_matches_oracle`][nvfp4_kvcache.oracle.assert_matches_oracle]; `.report` holds the [`MismatchReport`][nvfp4_kvcache.oracle.MismatchReport]."""

    def __init__(self, report: "MismatchReport") -> None:
        super().__init__(report.format())
        self.report = report


@dataclass(frozen=True)
class Policy:
    """Opt-in tolerances. Each is off by default; what each forgives is counted in the report.

    Attributes:
        ignore_nan_block_codes: do not compare the codes inside blocks whose input holds a NaN
            (the recipes define them, but a kernel may leave anything there: the block decodes
            to NaN, or to garbage, whatever the codes).
        ignore_zero_block_scale: do not compare the scale byte of blocks whose input is all
            zeros (any scale decodes zero codes to zero).
        either_signed_zero: accept code 0 where the oracle has 8 and 8 where it has 0.
        decoded_values_only: compare what the bytes decode to instead of the bytes (`-0.0`
            equals `+0.0`, NaN equals NaN); a mismatch of bytes that decode alike is forgiven.
        near_tie_ulps: accept the other neighbour of a code whose exact quotient lies within
            this many `float32` ulps of the midpoint between the two (0: off). This is what a
            different `float32` order of operations can move; prefer naming the order.

    Examples:
        >>> Policy(either_signed_zero=True).active()
        ['either_signed_zero']
    """

    ignore_nan_block_codes: bool = False
    ignore_zero_block_scale: bool = False
    either_signed_zero: bool = False
    decoded_values_only: bool = False
    near_tie_ulps: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.near_tie_ulps, int) or isinstance(self.near_tie_ulps, bool) or self.near_tie_ulps < 0:
            raise ValueError(f"near_tie_ulps must be a non-negative int, got {self.near_tie_ulps!r}")

    def active(self) -> list[str]:
        """Names of the policies that are on."""
        return [k for k, v in asdict(self).items() if v]


@dataclass
class MismatchReport:
    """The outcome of one comparison.

    Attributes:
        recipe: recipe name.
        elements: number of elements compared.
        blocks: number of blocks compared.
        code_mismatches: elements whose 4-bit code differs, after the policies.
        scale_mismatches: blocks whose scale byte differs, after the policies.
        value_mismatches: elements whose decoded values differ (`-0.0 == +0.0`, NaN equals
            NaN); with `decoded_values_only` this decides `ok`, else it is information.
        classes: mismatches per class before the policies (keys of
            [`MISMATCH_CLASSES`][nvfp4_kvcache.oracle.MISMATCH_CLASSES]; absent classes are 0).
        forgiven: policy name -> mismatches it accepted (codes and scale bytes counted apart:
            `"<policy>/codes"`, `"<policy>/scales"`).
        policy: the policies that were on.
        order: the `nvfp4` order of operations the oracle used, or `None`.
        block_rows: one dict per sampled block whose scale byte differs (see `format`).
        rows: sampled mismatching elements, as dicts (see `format`).
    """

    recipe: str
    elements: int
    blocks: int
    code_mismatches: int = 0
    scale_mismatches: int = 0
    value_mismatches: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    forgiven: dict[str, int] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)
    order: str | None = None
    block_rows: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing differs that the policies do not forgive."""
        if self.policy.decoded_values_only:
            return self.value_mismatches == 0
        return self.code_mismatches == 0 and self.scale_mismatches == 0

    def to_dict(self) -> dict:
        """A JSON-ready dict of everything in the report (`ok` included)."""
        out = asdict(self)
        out["ok"] = self.ok
        return out

    def to_json(self, **kwargs) -> str:
        """`json.dumps` of [`to_dict`][nvfp4_kvcache.oracle.MismatchReport.to_dict] (non-finite floats as strings)."""
        return json.dumps(_json_safe(self.to_dict()), **kwargs)

    def format(self) -> str:
        """A human-readable summary: counts, classes, policies, block rows and element rows."""
        head = (
            f"{self.recipe}: {self.code_mismatches} of {self.elements} codes and "
            f"{self.scale_mismatches} of {self.blocks} scale bytes differ from the oracle"
            f"; {self.value_mismatches} decoded values differ"
        )
        lines = [head]
        if self.order:
            lines.append(f"order of operations: {self.order}")
        if any(self.forgiven.values()) or self.policy.active():
            lines.append("policies: " + ", ".join(self.policy.active())
                         + "; forgave " + (", ".join(f"{k} {v}" for k, v in self.forgiven.items() if v) or "nothing"))
        if any(self.classes.values()):
            lines.append("mismatches per class: " + ", ".join(f"{k} {v}" for k, v in self.classes.items() if v))
        if self.block_rows:
            lines.append("block            amax           scale byte exp -> value            act -> value              codes differing")
            for b in self.block_rows:
                lines.append(
                    f"{str(b['block']):<16} {b['amax']:<14.7g} 0x{b['expected_scale']:02X} -> {b['expected_scale_value']:<22.7g}"
                    f" 0x{b['actual_scale']:02X} -> {b['actual_scale_value']:<20.7g} {b['codes_differing']}"
                    + (f"  [{b['flag']}]" if b["flag"] else "")
                )
        if self.rows:
            lines.append("index            input          expected (code value)     actual (code value)    "
                         "step           block amax     scale byte exp/act  flag")
            for r in self.rows:
                lines.append(
                    f"{str(r['index']):<16} {r['input']:<14.7g} 0x{r['expected_code']:X} {r['expected_value']:<20.7g} "
                    f"0x{r['actual_code']:X} {r['actual_value']:<18.7g} {r['step']:<14.7g} {r['block_amax']:<14.7g} "
                    f"0x{r['expected_scale']:02X}/0x{r['actual_scale']:02X}           {r['flag']}"
                )
        return "\n".join(lines)


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _decode(recipe: Recipe, codes: torch.Tensor, scale_bytes: torch.Tensor, g) -> torch.Tensor:
    return recipe.decode_blocks(codes, scale_bytes.reshape(-1), g)


def _unit_scales(recipe: Recipe, scale_bytes: torch.Tensor, g) -> torch.Tensor:
    """What each scale byte decodes a code of 1.0 to (with `g`), `float32 [n]`."""
    ones = torch.full((scale_bytes.numel(), recipe.block_size), 2, dtype=torch.uint8, device=scale_bytes.device)
    return _decode(recipe, ones, scale_bytes, g)[:, 0]


def _as_packed(packed: object) -> torch.Tensor:
    if isinstance(packed, torch.Tensor) and packed.dtype in _PACKED_DTYPES:
        return packed.view(torch.uint8)
    return check_uint8(packed, "packed")


def _as_scale_bytes(recipe: Recipe, scales: object, g) -> torch.Tensor:
    """`uint8` scale bytes; a torch float8 tensor is accepted when its dtype means what the recipe's bytes mean."""
    if isinstance(scales, torch.Tensor) and scales.dtype in _TORCH_SCALE_DTYPES:
        every = torch.arange(256, dtype=torch.int32).to(torch.uint8)
        theirs = every.view(scales.dtype).float()
        ours = _unit_scales(recipe, every, None if g is None else torch.tensor(1.0))
        same = (theirs == ours) | (torch.isnan(theirs) & torch.isnan(ours))
        if not bool(same.all()):
            b = int((~same).nonzero()[0])
            raise ValueError(
                f"scales of dtype {scales.dtype} cannot stand for recipe {recipe.name!r}'s scale bytes: byte 0x{b:02X} "
                f"means {theirs[b].item()} there and {ours[b].item()} here; pass the bytes as uint8"
            )
        return scales.view(torch.uint8)
    return check_uint8(scales, "scales")


def _exact_quotient_parts(recipe: Recipe, scale_bytes: torch.Tensor, g, encode: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per block `(A, B)` in `float64` with the exact scaled value `|x| * A / B` (see `_element_flags`)."""
    if g is None:
        return torch.ones(scale_bytes.numel(), dtype=torch.float64), _unit_scales(recipe, scale_bytes, None).double()
    sf = _unit_scales(recipe, scale_bytes, torch.tensor(1.0)).double()   # the E4M3 value itself
    g64 = g.double().cpu()
    if encode:   # the kernel divides by sf / G: quotient |x| * G / sf
        return torch.full_like(sf, float(g64)), sf
    return torch.ones_like(sf), sf * g64       # sf (4 bits) * g (24 bits): exact in float64


def _float32_ulp(m: torch.Tensor) -> torch.Tensor:
    _, e = torch.frexp(m)
    return torch.ldexp(torch.ones_like(m), (e - 24).clamp(min=-149))


def _element_flags(absx: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tie, distance in float32 ulps of the nearest midpoint, E2M1 step in input units), `float64`.

    The exact quotient is `|x| * A / B`. Products of a `float32` input (24 bits) with `A` (24 bits)
    and of a midpoint (3 bits) with `B` (at most 28 bits) are exact in `float64`, so `tie` is decided
    exactly; the distance is exact up to one final rounding.
    """
    table = torch.tensor(E2M1.magnitudes, dtype=torch.float64)
    mids = (table[1:] + table[:-1]) / 2
    xa = absx * a
    q = xa / b
    i = torch.searchsorted(mids, q).clamp(max=mids.numel() - 1)
    j = (i - 1).clamp(min=0)
    nearer = torch.where((q - mids[j]).abs() < (mids[i] - q).abs(), j, i)
    m = mids[nearer]
    diff = (xa - m * b).abs()
    tie = (diff == 0) & (b > 0)
    distance = torch.where(b > 0, diff / (_float32_ulp(m) * b), torch.full_like(diff, math.inf))
    k = torch.searchsorted(table, q, right=True).clamp(min=1, max=table.numel() - 1)
    step = (table[k] - table[k - 1]) * b / a
    return tie, distance, step


def _scale_flags(recipe: Recipe, amax: torch.Tensor, g, encode: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(tie, distance in float32 ulps) of the exact NVFP4 block scale to the nearest E4M3 midpoint."""
    n = amax.numel()
    if g is None:
        return torch.zeros(n, dtype=torch.bool), torch.full((n,), math.inf, dtype=torch.float64)
    every = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    vals = _unit_scales(recipe, every, torch.tensor(1.0)).double()
    table = torch.unique(vals[torch.isfinite(vals) & (vals >= 0)])
    mids = (table[1:] + table[:-1]) / 2
    a64 = amax.double()
    g64 = float(g)
    num = a64 * g64 if encode else a64          # exact s = num / den
    den = torch.full_like(a64, 6.0) if encode else torch.full_like(a64, 6.0 * g64)
    s = num / den
    i = torch.searchsorted(mids, s).clamp(max=mids.numel() - 1)
    j = (i - 1).clamp(min=0)
    nearer = torch.where((s - mids[j]).abs() < (mids[i] - s).abs(), j, i)
    m = mids[nearer]
    diff = (num - m * den).abs()
    finite = torch.isfinite(a64)
    tie = (diff == 0) & finite
    distance = torch.where(finite, diff / (_float32_ulp(m) * den), torch.full_like(diff, math.inf))
    return tie, distance


def _spread(indices: list[int], k: int) -> list[int]:
    """Up to `k` of `indices`, evenly spaced, first and last included."""
    if len(indices) <= k:
        return list(indices)
    if k == 1:
        return [indices[0]]
    return [indices[round(i * (len(indices) - 1) / (k - 1))] for i in range(k)]


def compare_with_oracle(
    recipe: str | Recipe,
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    global_scale: object = None,
    *,
    order: str | None = None,
    policy: Policy | None = None,
    max_rows: int = 10,
    max_block_rows: int = 10,
) -> MismatchReport:
    """Quantize `x` with the oracle and compare a candidate's bytes with it.

    Args:
        recipe: recipe name or object.
        x: the input, `[..., N]` (`float32`, `bfloat16` or `float16`), any device.
        packed: candidate's `[..., N // 2]` packed codes, `uint8` or `torch.float4_e2m1fn_x2`
            (element `2i` in the low nibble).
        scales: candidate's scale bytes, `N // block_size` per row, as `uint8` or as the torch
            float8 dtype of the recipe's scale (`float8_e4m3fn` for `nvfp4`, `float8_e8m0fnu`
            for `mxfp4`); any shape with that many elements is accepted (SGLang's block-16 layout
            flattens heads: `[tokens, heads * head_dim // 16]`).
        global_scale: recipes with a global scale only: the `float32` decode multiplier `g`
            (with an `"encode"` order: the encode scale `G` the kernel takes).
        order: `nvfp4` only: the kernel's `float32` order of operations, a name in
            [`ORDERS`][nvfp4_kvcache.recipes.nvfp4.ORDERS] (default: `"mul_rcp"`, NVIDIA's).
        policy: opt-in tolerances ([`Policy`][nvfp4_kvcache.oracle.Policy]); default none.
        max_rows: how many mismatching elements to describe (one per class first, then spread
            across blocks).
        max_block_rows: how many blocks with a differing scale byte to describe.

    Returns:
        [`MismatchReport`][nvfp4_kvcache.oracle.MismatchReport].

    Raises:
        ValueError: wrong dtypes or shapes, a float8 dtype that does not mean the recipe's
            scale bytes, or an order for a recipe without a global scale (the message says which).
        TypeError: a non-tensor argument.
    """
    r = get_recipe(recipe)
    policy = policy or Policy()
    encode = False
    if order is not None:
        if not r.needs_global_scale:
            raise ValueError(f"order applies to recipes with a global scale; {r.name!r} has none")
        encode = get_order(order).global_scale == "encode"
        r = nvfp4_with_order(order)
    q = r.quantize(x, global_scale)
    g = q.global_scale
    packed = _as_packed(packed)
    scales = _as_scale_bytes(r, scales, g)
    if tuple(packed.shape) != tuple(q.packed.shape):
        raise ValueError(f"packed must have shape {tuple(q.packed.shape)} for x of shape {tuple(x.shape)}, got {tuple(packed.shape)}")
    if scales.numel() != q.scales.numel():
        raise ValueError(f"scales must hold {q.scales.numel()} bytes ({tuple(q.scales.shape)}), got {tuple(scales.shape)}")
    block = r.block_size
    dev = q.packed.device
    exp_codes = unpack_nibbles(q.packed).reshape(-1, block).cpu()
    act_codes = unpack_nibbles(packed.to(dev)).reshape(-1, block).cpu()
    exp_scales = q.scales.reshape(-1).cpu()
    act_scales = scales.to(dev).reshape(-1).cpu()
    g_cpu = None if g is None else g.cpu()
    flat_x = x.detach().float().reshape(-1, block).cpu()

    exp_vals = _decode(r, exp_codes, exp_scales, g_cpu)
    act_vals = _decode(r, act_codes, act_scales, g_cpu)
    same_value = (exp_vals == act_vals) | (torch.isnan(exp_vals) & torch.isnan(act_vals))

    has_nan = torch.isnan(flat_x).any(-1)
    has_inf = torch.isinf(flat_x).any(-1) & ~has_nan
    all_zero = (flat_x == 0).all(-1)
    amax = flat_x.abs().amax(-1)

    bad_scale = exp_scales != act_scales
    bad_code = exp_codes != act_codes
    signed_zero = bad_code & ((exp_codes & E2M1.magnitude_mask) == 0) & ((act_codes & E2M1.magnitude_mask) == 0)

    a, b = _exact_quotient_parts(r, exp_scales, g_cpu, encode)
    tie, distance, step = _element_flags(flat_x.double().abs(), a.unsqueeze(-1), b.unsqueeze(-1))
    s_tie, s_distance = _scale_flags(r, amax, g_cpu, encode)
    near = distance <= NEAR_TIE_ULPS
    s_near = s_distance <= NEAR_TIE_ULPS

    # classes (before policies): scale bytes per block, codes per element
    scale_class = torch.full(bad_scale.shape, -1)
    scale_names = [k for k in MISMATCH_CLASSES if k.startswith("scale/")]
    for i, cond in reversed(list(enumerate([has_nan, has_inf, all_zero, s_tie, s_near, torch.ones_like(has_nan)]))):
        scale_class = torch.where(bad_scale & cond, i, scale_class)
    code_class = torch.full(bad_code.shape, -1)
    code_names = [k for k in MISMATCH_CLASSES if k.startswith("codes/")]
    conds = [has_nan.unsqueeze(-1).expand_as(bad_code), has_inf.unsqueeze(-1).expand_as(bad_code),
             bad_scale.unsqueeze(-1).expand_as(bad_code), signed_zero, tie, near, torch.ones_like(bad_code)]
    for i, cond in reversed(list(enumerate(conds))):
        code_class = torch.where(bad_code & cond, i, code_class)
    classes = {name: int((scale_class == i).sum()) for i, name in enumerate(scale_names)}
    classes.update({name: int((code_class == i).sum()) for i, name in enumerate(code_names)})

    # policies: each forgives a subset, counted on its own
    keep_code, keep_scale = bad_code.clone(), bad_scale.clone()
    forgiven: dict[str, int] = {}

    def forgive(name: str, codes_mask: torch.Tensor | None, scale_mask: torch.Tensor | None) -> None:
        nonlocal keep_code, keep_scale
        if codes_mask is not None:
            hit = keep_code & codes_mask
            forgiven[f"{name}/codes"] = int(hit.sum())
            keep_code = keep_code & ~hit
        if scale_mask is not None:
            hit = keep_scale & scale_mask
            forgiven[f"{name}/scales"] = int(hit.sum())
            keep_scale = keep_scale & ~hit

    if policy.ignore_nan_block_codes:
        forgive("ignore_nan_block_codes", has_nan.unsqueeze(-1).expand_as(bad_code), None)
    if policy.ignore_zero_block_scale:
        forgive("ignore_zero_block_scale", None, all_zero)
    if policy.either_signed_zero:
        forgive("either_signed_zero", signed_zero, None)
    if policy.near_tie_ulps:
        neighbours = ((exp_codes & E2M1.sign_bit) == (act_codes & E2M1.sign_bit)) & (
            ((exp_codes & E2M1.magnitude_mask).int() - (act_codes & E2M1.magnitude_mask).int()).abs() == 1)
        within = (distance <= policy.near_tie_ulps) & neighbours & ~bad_scale.unsqueeze(-1)
        forgive("near_tie_ulps", within, None)
    if policy.decoded_values_only:
        forgive("decoded_values_only", same_value, same_value.all(-1))

    report = MismatchReport(
        recipe=r.name,
        elements=exp_codes.numel(),
        blocks=exp_scales.numel(),
        code_mismatches=int(keep_code.sum()),
        scale_mismatches=int(keep_scale.sum()),
        value_mismatches=int((~same_value).sum()),
        classes=classes,
        forgiven=forgiven,
        policy=policy,
        order=None if order is None else get_order(order).name,
    )
    exp_unit = _unit_scales(r, exp_scales, g_cpu)
    act_unit = _unit_scales(r, act_scales, g_cpu)
    lead = tuple(x.shape[:-1])
    blocks_per_row = x.shape[-1] // block

    def block_index(bi: int) -> tuple[int, ...]:
        row, k = divmod(bi, blocks_per_row)
        lead_idx = tuple(int(v) for v in torch.unravel_index(torch.tensor(row), lead)) if lead else ()
        return (*lead_idx, k)

    for bi in _spread(keep_scale.nonzero().flatten().tolist(), max_block_rows):
        report.block_rows.append({
            "block": block_index(bi),
            "amax": float(amax[bi]),
            "expected_scale": int(exp_scales[bi]),
            "expected_scale_value": float(exp_unit[bi]),
            "actual_scale": int(act_scales[bi]),
            "actual_scale_value": float(act_unit[bi]),
            "codes_differing": int(bad_code[bi].sum()),
            "flag": "tie" if bool(s_tie[bi]) else "near-tie" if bool(s_near[bi]) else "",
            "class": scale_names[int(scale_class[bi])],
        })

    bad = keep_code | keep_scale.unsqueeze(-1)
    if policy.decoded_values_only:
        bad = ~same_value
    flat_bad = bad.flatten().nonzero().flatten().tolist()
    if len(flat_bad) <= max_rows:
        chosen = flat_bad
    else:
        chosen = []
        flat_class = torch.where(code_class >= 0, code_class, len(code_names)).flatten()
        for c in range(len(code_names) + 1):   # one row per class present, its first element
            hit = ((flat_class == c) & bad.flatten()).nonzero()
            if hit.numel() and len(chosen) < max_rows:
                chosen.append(int(hit[0]))
        blocks_bad = sorted({i // block for i in flat_bad})
        by_block: dict[int, int] = {}
        for i in flat_bad:
            by_block.setdefault(i // block, i)
        for bi in _spread(blocks_bad, max_rows):
            if len(chosen) >= max_rows:
                break
            if by_block[bi] not in chosen and all(c // block != bi for c in chosen):
                chosen.append(by_block[bi])
        chosen = sorted(chosen)
    shape = tuple(x.shape)
    for i in chosen:
        bi, j = divmod(i, block)
        flag = "tie" if bool(tie[bi, j]) else "near-tie" if bool(near[bi, j]) else ""
        cls = int(code_class[bi, j])
        report.rows.append({
            "index": tuple(int(v) for v in torch.unravel_index(torch.tensor(i), shape)),
            "input": float(flat_x[bi, j]),
            "expected_code": int(exp_codes[bi, j]),
            "expected_value": float(E2M1.decode(int(exp_codes[bi, j])) * exp_unit[bi]),
            "actual_code": int(act_codes[bi, j]),
            "actual_value": float(E2M1.decode(int(act_codes[bi, j])) * act_unit[bi]),
            "step": float(step[bi, j]),
            "flag": flag,
            "ulps_from_midpoint": float(distance[bi, j]),
            "class": code_names[cls] if cls >= 0 else "scale_only",
            "block_amax": float(amax[bi]),
            "expected_scale": int(exp_scales[bi]),
            "actual_scale": int(act_scales[bi]),
        })
    return report


def assert_matches_oracle(
    recipe: str | Recipe,
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    global_scale: object = None,
    *,
    order: str | None = None,
    policy: Policy | None = None,
    max_rows: int = 10,
    max_block_rows: int = 10,
) -> None:
    """Raise [`OracleMismatch`][nvfp4_kvcache.oracle.OracleMismatch] unless the candidate's bytes equal the oracle's.

    Same arguments as [`compare_with_oracle`][nvfp4_kvcache.oracle.compare_with_oracle]. Meant for
    pytest: the message is the report. With a policy, what it forgave is in the report, and the
    call passes only when nothing else differs.

    Raises:
        OracleMismatch: the bytes (or, with `decoded_values_only`, the decoded values) differ.
    """
    report = compare_with_oracle(recipe, x, packed, scales, global_scale, order=order, policy=policy,
                                 max_rows=max_rows, max_block_rows=max_block_rows)
    if not report.ok:
        raise OracleMismatch(report)
