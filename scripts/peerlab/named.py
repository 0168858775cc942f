"""Which named case (`nvfp4_kvcache.cases`) pins each class of mismatch a peer shows.

Every class a block peer fails on in the data has a named case here: a block whose bytes the oracle
must produce and the peer does not. The quick check runs each peer on its cases and requires the
peer's bytes to still differ from the case's (and the oracle's to equal them, which the named-case
tests check), so a peer that changes its rule, or a case that stops pinning it, is noticed.
"""

from __future__ import annotations

_MX_COMMON = {
    "codes/tie": "mxfp4/subnormal_input",
    "codes/other": "mxfp4/subnormal_input",
    "codes/nan_block": "mxfp4/nan_block",
    "scale/inf_block": "mxfp4/inf_block",
    "codes/inf_block": "mxfp4/inf_block",
}

NAMED: dict[str, dict[str, str]] = {
    "torchao/nvfp4": {
        "scale/zero_block": "nvfp4/zero_block",
        "scale/tie": "nvfp4/scale_subnormal",
        "scale/near_tie": "nvfp4/scale_subnormal",
        "scale/other": "nvfp4/scale_underflow",
        "codes/nan_block": "nvfp4/nan_block",
    },
    "torchao/mx_floor": dict(_MX_COMMON),
    "torchao/mx_even": {**_MX_COMMON, "scale/other": "mxfp4/amax_7_saturates"},
    "torchao/mx_ceil": {**_MX_COMMON, "scale/other": "mxfp4/amax_7_saturates"},
    "modelopt/nvfp4": {
        "scale/zero_block": "nvfp4/zero_block",
        "codes/signed_zero": "nvfp4/negative_zero_in_block",
        "scale/other": "nvfp4/scale_underflow",
        "codes/nan_block": "nvfp4/nan_block",
        "scale/nan_block": "nvfp4/nan_block",
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
        "codes/nan_block": "mxfp4/nan_block",
        "scale/inf_block": "mxfp4/inf_block",
        "codes/inf_block": "mxfp4/inf_block",
        "scale/zero_block": "mxfp4/zero_block",
    },
    "sglang/fp4_mx_block16": {"scale/inf_block": "fp4_mx_block16/inf_block"},
}
"""Entry id -> {class of mismatch -> named case}."""
