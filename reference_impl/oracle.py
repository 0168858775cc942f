"""Check a candidate quantizer's output against the oracle, bit for bit, with a readable report.

:func:`assert_matches_oracle` is the one call a kernel author needs in a test: give it the input
and the candidate's packed bytes and scale bytes; it quantizes the input with the oracle and
compares **codes and scale bytes** with zero tolerance. On a mismatch it raises
:class:`OracleMismatch` (an ``AssertionError``, so pytest shows it as a failed assertion) whose
message lists the first mismatching elements with everything needed to see why: the position,
the input value, the expected and actual code and decoded value, and the block's amax and scale.

The [Cookbook](../cookbook.md) shows it on real candidates.

Examples:
    >>> import torch
    >>> from nvfp4_kvcache import quantize
    >>> from nvfp4_kvcache.oracle import assert_matches_oracle, compare_with_oracle
    >>> x = torch.randn(4, 64)
    >>> q = quantize(x, "mxfp4")
    >>> assert_matches_oracle("mxfp4", x, q.packed, q.scales)      # passes silently
    >>> bad = q.packed.clone(); bad[0, 0] ^= 0x1                     # flip one bit of one code
    >>> report = compare_with_oracle("mxfp4", x, bad, q.scales)
    >>> report.ok, report.code_mismatches, report.scale_mismatches
    (False, 1, 0)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nvfp4_kvcache.checks import check_uint8
from nvfp4_kvcache.formats import E2M1
from nvfp4_kvcache.packing import unpack_nibbles
from nvfp4_kvcache.recipes import Recipe, get_recipe

__all__ = ["OracleMismatch", "MismatchReport", "compare_with_oracle", "assert_matches_oracle"]


class OracleMismatch(AssertionError):
    """Raised by :func:`assert_matches_oracle`; ``.report`` holds the :class:`MismatchReport`."""

    def __init__(self, report: "MismatchReport") -> None:
        super().__init__(report.format())
        self.report = report


@dataclass
class MismatchReport:
    """The outcome of one comparison.

    Attributes:
        recipe: recipe name.
        elements: number of elements compared.
        blocks: number of blocks compared.
        code_mismatches: elements whose 4-bit code differs.
        scale_mismatches: blocks whose scale byte differs.
        rows: the first mismatching elements, as dicts (see :meth:`format`).
    """

    recipe: str
    elements: int
    blocks: int
    code_mismatches: int = 0
    scale_mismatches: int = 0
    rows: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every code and every scale byte matches."""
        return self.code_mismatches == 0 and self.scale_mismatches == 0

    def format(self) -> str:
        """A human-readable summary and table of the first mismatches."""
        head = (
            f"{self.recipe}: {self.code_mismatches} of {self.elements} codes and "
            f"{self.scale_mismatches} of {self.blocks} scale bytes differ from the oracle"
        )
        if self.ok:
            return head
        lines = [head, "index            input          expected (code value)     actual (code value)    "
                       "block amax     scale byte exp/act"]
        for r in self.rows:
            lines.append(
                f"{str(r['index']):<16} {r['input']:<14.7g} 0x{r['expected_code']:X} {r['expected_value']:<20.7g} "
                f"0x{r['actual_code']:X} {r['actual_value']:<18.7g} {r['block_amax']:<14.7g} "
                f"0x{r['expected_scale']:02X}/0x{r['actual_scale']:02X}"
            )
        return "\n".join(lines)


def _scale_values(recipe: Recipe, scale_bytes: torch.Tensor, global_scale) -> torch.Tensor:
    ones = torch.full((scale_bytes.numel(), recipe.block_size), 2, dtype=torch.uint8)  # code 2 = 1.0
    g = recipe.check_global_scale(global_scale, scale_bytes.device)
    return recipe.decode_blocks(ones, scale_bytes.reshape(-1), g)[:, 0]


def compare_with_oracle(
    recipe: str | Recipe,
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    global_scale: object = None,
    *,
    max_rows: int = 10,
) -> MismatchReport:
    """Quantize ``x`` with the oracle and compare a candidate's bytes with it.

    Args:
        recipe: recipe name or object.
        x: the input, ``[..., N]`` (fp32, bf16 or fp16).
        packed: candidate's ``uint8 [..., N // 2]``.
        scales: candidate's scale bytes, ``[..., N // block_size]``, as ``uint8`` or (``nvfp4``)
            ``float8_e4m3fn``; any shape with that many elements per row is accepted (SGLang's
            block-16 layout flattens heads: ``[tokens, heads * head_dim // 16]``).
        global_scale: ``nvfp4`` only.
        max_rows: how many mismatching elements to describe.

    Returns:
        :class:`MismatchReport`.

    Raises:
        ValueError: wrong dtypes or shapes (the message names them).
    """
    r = get_recipe(recipe)
    q = r.quantize(x, global_scale)
    check_uint8(packed, "packed")
    if isinstance(scales, torch.Tensor) and scales.dtype == torch.float8_e4m3fn:
        scales = scales.view(torch.uint8)
    check_uint8(scales, "scales")
    if tuple(packed.shape) != tuple(q.packed.shape):
        raise ValueError(f"packed must have shape {tuple(q.packed.shape)} for x of shape {tuple(x.shape)}, got {tuple(packed.shape)}")
    if scales.numel() != q.scales.numel():
        raise ValueError(f"scales must hold {q.scales.numel()} bytes ({tuple(q.scales.shape)}), got {tuple(scales.shape)}")
    block = r.block_size
    exp_codes = unpack_nibbles(q.packed).reshape(-1, block)
    act_codes = unpack_nibbles(packed.to(q.packed.device)).reshape(-1, block)
    exp_scales = q.scales.reshape(-1)
    act_scales = scales.to(q.scales.device).reshape(-1)
    bad_scale = exp_scales != act_scales
    bad = (exp_codes != act_codes) | bad_scale.unsqueeze(-1)
    report = MismatchReport(
        recipe=r.name,
        elements=exp_codes.numel(),
        blocks=exp_scales.numel(),
        code_mismatches=int((exp_codes != act_codes).sum()),
        scale_mismatches=int(bad_scale.sum()),
    )
    if report.ok:
        return report
    flat_x = x.detach().float().reshape(-1, block)
    amax = flat_x.abs().amax(-1)
    exp_unit = _scale_values(r, exp_scales, q.global_scale)
    act_unit = _scale_values(r, act_scales, q.global_scale)
    shape = tuple(x.shape)
    for i in bad.flatten().nonzero().flatten()[:max_rows].tolist():
        b, j = divmod(i, block)
        report.rows.append({
            "index": tuple(int(v) for v in torch.unravel_index(torch.tensor(i), shape)),
            "input": float(flat_x[b, j]),
            "expected_code": int(exp_codes[b, j]),
            "expected_value": float(E2M1.decode(int(exp_codes[b, j])) * exp_unit[b]),
            "actual_code": int(act_codes[b, j]),
            "actual_value": float(E2M1.decode(int(act_codes[b, j])) * act_unit[b]),
            "block_amax": float(amax[b]),
            "expected_scale": int(exp_scales[b]),
            "actual_scale": int(act_scales[b]),
        })
    return report


def assert_matches_oracle(
    recipe: str | Recipe,
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    global_scale: object = None,
    *,
    max_rows: int = 10,
) -> None:
    """Raise :class:`OracleMismatch` unless the candidate's bytes equal the oracle's exactly.

    Same arguments as :func:`compare_with_oracle`. Meant for pytest: the message is the report.
    """
    report = compare_with_oracle(recipe, x, packed, scales, global_scale, max_rows=max_rows)
    if not report.ok:
        raise OracleMismatch(report)

