"""Which named cases (`nvfp4_kvcache.cases`) pin each class of mismatch a peer shows.

Every class a block peer fails on in the data has at least one named case here: a block whose
bytes the oracle must produce and the peer does not. The quick check runs each peer on its cases
and requires, for every case, that the oracle still gives the case's bytes, that the peer's bytes
still differ from them, and that the difference still falls in the mapped class (so a peer that
changes its rule, a case that stops pinning it, or a case whose bytes were edited is noticed).

A class may have more than one cause (PyTorch's MX helper differs in `codes/other` both through
its `bfloat16` double rounding and through its byte-0 scaling): then it maps to one case per
cause. A few classes show only on inputs of many blocks; `NOT_ON_ONE_BLOCK` lists them with the
reason, and their case is only required to still differ.
"""

from __future__ import annotations

_MX_COMMON = {
    "codes/tie": "mxfp4/byte0_element_tie",
    "codes/other": "mxfp4/subnormal_input",
    "codes/nan_block": "mxfp4/nan_block",
    "scale/inf_block": "mxfp4/inf_block",
    "codes/inf_block": "mxfp4/inf_block",
}

_RCEIL_BYTE0 = {
    "codes/tie": "mxfp4_rceil/byte0_element_tie",
    "codes/other": "mxfp4_rceil/byte0_element_scaled_by_2_127",
    "scale/other": "mxfp4_rceil/log2_rounds_down_one_ulp_above",
    "codes/nan_block": "mxfp4_rceil/nan_with_finite_values",
}

NAMED: dict[str, dict[str, str | tuple[str, ...]]] = {
    "torchao/nvfp4": {
        "scale/zero_block": "nvfp4/zero_block",
        "scale/tie": "nvfp4/scale_subnormal_tie",
        "scale/near_tie": "nvfp4/scale_subnormal_near_tie",
        "scale/other": "nvfp4/scale_underflow",
        "codes/nan_block": "nvfp4/nan_block",
    },
    "torchao/mx_floor": dict(_MX_COMMON),
    "torchao/mx_even": {**_MX_COMMON, "scale/other": "mxfp4/amax_7_saturates"},
    "torchao/mx_ceil": {**_MX_COMMON, "scale/other": "mxfp4/amax_7_saturates"},
    "torchao/mx_rceil": dict(_RCEIL_BYTE0),
    "modelopt/nvfp4": {
        "scale/zero_block": "nvfp4/zero_block",
        "codes/signed_zero": "nvfp4/negative_zero_in_block",
        "scale/other": "nvfp4/scale_underflow",
        "codes/nan_block": "nvfp4/nan_block",
        "scale/nan_block": "nvfp4/nan_block",
    },
    "modelopt/mxfp4": {
        "codes/tie": "mxfp4_rceil/ties_even_no_zeros",
        "codes/signed_zero": "mxfp4_rceil/positive_zero_in_block",
        "scale/other": "mxfp4_rceil/log2_rounds_down_one_ulp_above",
        "scale/nan_block": "mxfp4_rceil/nan_with_finite_values",
        "codes/nan_block": "mxfp4_rceil/nan_with_finite_values",
        "scale/inf_block": "mxfp4_rceil/inf_and_largest_power_of_two",
        "codes/inf_block": "mxfp4_rceil/inf_and_largest_power_of_two",
    },
    "compressed_tensors/nvfp4": {
        "scale/other": "nvfp4/block_scale_from_bf16_quotient",
        "scale/zero_block": "nvfp4/zero_block",
        "codes/signed_zero": "nvfp4/negative_zero_in_block",
        "codes/nan_block": "nvfp4/nan_block_bfloat16",
        "scale/nan_block": "nvfp4/nan_block_bfloat16",
    },
    "compressed_tensors/mxfp4": {
        "scale/other": "mxfp4/amax_7_saturates",
        "codes/signed_zero": "mxfp4/zero_block",
        "scale/nan_block": "mxfp4/nan_block",
        "codes/nan_block": "mxfp4/nan_block_bfloat16",
        "scale/inf_block": "mxfp4/inf_block",
        "codes/inf_block": "mxfp4/inf_block_bfloat16",
        "scale/zero_block": "mxfp4/zero_block_float16",
    },
    "torch_mx/mxfp4": {
        **_RCEIL_BYTE0,
        "codes/other": ("mxfp4_rceil/bfloat16_double_rounding", "mxfp4_rceil/byte0_element_scaled_by_2_127"),
    },
    "sglang/fp4_mx_block16": {"scale/inf_block": "fp4_mx_block16/inf_block"},
}
"""Entry id -> {class of mismatch -> named case, or a tuple of cases (one per cause)}."""

NOT_ON_ONE_BLOCK: dict[tuple[str, str], str] = {
    ("modelopt/nvfp4", "scale/nan_block"): (
        "the sign of the E4M3 NaN scale depends on the block's place in the tensor: of n blocks, the first "
        "16 * floor(n / 16) get 0xFF and the others 0x7F (the oracle's byte), so a single block never shows it "
        "(observed with torch 2.13.0 on an x86 CPU; a NaN's sign bit is left free by IEEE 754 arithmetic); "
        "both bytes decode to NaN"),
    ("compressed_tensors/nvfp4", "scale/nan_block"): (
        "as for ModelOpt: of n blocks the first 16 * floor(n / 16) get the NaN scale 0xFF, the others 0x7F "
        "(torch 2.13.0, x86 CPU); both decode to NaN"),
}
"""(entry id, class) -> why no single block shows the class; its case must still differ."""


def cases_for(entry_id: str, cls: str) -> tuple[str, ...]:
    """The named cases that pin one class of one entry (empty when none does)."""
    names = NAMED.get(entry_id, {}).get(cls, ())
    return (names,) if isinstance(names, str) else tuple(names)
