"""compressed-tensors (llm-compressor's format library): the NVFP4 and MXFP4 presets, CPU paths.

Read from compressed-tensors 0.20.1, `compressed_tensors/quantization/utils/helpers.py`
(`generate_gparam`, `calculate_qparams`), `quantization/utils/mxfp_utils.py`,
`quantization/lifecycle/forward_helpers.py` (`_quantize`, `_dequantize`),
`quantization/utils/fp4_utils.py` (`cast_to_fp4`) and `compressors/nvfp4/`, `compressors/mxfp4/`:

* NVFP4: the global scale is the *encode* scale `G = 448 * 6 / amax` (`generate_gparam`); the
  block scale is `G * (amax_b / 6)`, where `amax_b / 6` is computed **in the input dtype**, then
  rounded to E4M3 (clamped to +-448); a zero scale becomes 0.125 (`_get_dtype_eps`); elements
  `x / fl(sf / G)` rounded to nearest even; decode `e2m1 * fl(sf / G)`.
* MXFP4: the exponent of `amax` with its mantissa rounded to one bit (ties up), minus 2, as a
  float in the input dtype, then `2**(b - 127)` in the input dtype (torchao's EVEN rule); the
  stored byte is `127 + floor(log2(scale))`.
"""

from __future__ import annotations

import torch

from peerlab.base import Entry, Peer, PeerResult, finite_amax

SOURCE = ("compressed-tensors 0.20.1: compressed_tensors/quantization/utils/helpers.py, mxfp_utils.py, "
          "quantization/lifecycle/forward_helpers.py, compressors/nvfp4/, compressors/mxfp4/")


def load() -> list[Entry]:
    from compressed_tensors.compressors.mxfp4.base import MXFP4PackedCompressor
    from compressed_tensors.compressors.nvfp4.base import NVFP4PackedCompressor
    from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
    from compressed_tensors.quantization.lifecycle.forward import dequantize
    from compressed_tensors.quantization import QuantizationScheme
    from compressed_tensors.quantization.quant_scheme import MXFP4, NVFP4
    from compressed_tensors.quantization.utils.helpers import calculate_qparams, generate_gparam

    def run(x: torch.Tensor, G: float | None, preset: dict, compressor, group: int, global_scaled: bool) -> PeerResult:
        args = preset["weights"]
        scheme = QuantizationScheme(targets=["Linear"], weights=args)
        groups = x.unflatten(-1, (-1, group))
        state = {"weight": x.clone()}
        gs = None
        if global_scaled:
            if G is None:
                amax = finite_amax(x).reshape(1)
                gs = generate_gparam(-amax, amax)
            else:
                gs = torch.tensor([G], dtype=torch.float32)
            state["weight_global_scale"] = gs
        scale, _ = calculate_qparams(groups.amin(-1), groups.amax(-1), args, global_scale=gs)
        state["weight_scale"] = scale
        packed = compressor.compress(state, scheme)
        # the compressor's decompress, in float32 (its own default unpacks to bfloat16)
        codes = unpack_fp4_from_uint8(packed["weight_packed"], x.shape[0], x.shape[1], dtype=torch.float32)
        deq = dequantize(x_q=codes, scale=compressor._decompress_scale(packed["weight_scale"], torch.float32),
                         args=args, global_scale=gs, dtype=torch.float32)
        scale_bytes = packed["weight_scale"].view(torch.uint8).reshape(x.shape[0], -1)
        return PeerResult(packed["weight_packed"], scale_bytes, deq, None if gs is None else float(gs))

    return [
        Entry(
            id="compressed_tensors/nvfp4",
            recipe="nvfp4",
            rule="sf = E4M3(G * (amax_b / 6 in the input dtype)), 0.125 for a zero scale; y = x / fl(sf / G); "
                 "sign bit = signbit(x)",
            api="G = generate_gparam(-amax, amax); scale, _ = calculate_qparams(group_min, group_max, "
                "NVFP4['weights'], global_scale=G); out = NVFP4PackedCompressor.compress({'weight': x, "
                "'weight_scale': scale, 'weight_global_scale': G}, scheme); out['weight_packed'], out['weight_scale']; "
                "dequantize(x_q=unpack_fp4_from_uint8(out['weight_packed'], m, n, dtype=torch.float32), "
                "scale=NVFP4PackedCompressor._decompress_scale(out['weight_scale'], torch.float32), "
                "args=NVFP4['weights'], global_scale=G, dtype=torch.float32)",
            source=SOURCE,
            run=lambda x, G: run(x, G, NVFP4, NVFP4PackedCompressor, 16, True),
            global_scale="G = generate_gparam(finite amax) = 448 * 6 / amax, the encode scale (the reciprocal of "
                         "the decode multiplier), passed as weight_global_scale",
            order="encode_div",
        ),
        Entry(
            id="compressed_tensors/mxfp4",
            recipe="mxfp4",
            rule="E = floor(log2 r) - 2 where r is amax (input dtype) with its mantissa rounded to one bit, ties up "
                 "(torchao's EVEN); byte = 127 + floor(log2 2**E)",
            api="scale, _ = calculate_qparams(group_min, group_max, MXFP4['weights']); "
                "out = MXFP4PackedCompressor.compress({'weight': x, 'weight_scale': scale}, scheme); "
                "out['weight_packed'], out['weight_scale']; dequantize(x_q=unpack_fp4_from_uint8(out['weight_packed'], "
                "m, n, dtype=torch.float32), scale=MXFP4PackedCompressor._decompress_scale(out['weight_scale'], "
                "torch.float32), args=MXFP4['weights'], dtype=torch.float32)",
            source=SOURCE,
            run=lambda x, G: run(x, G, MXFP4, MXFP4PackedCompressor, 32, False),
            note="no recipe here implements the EVEN rule: compared with mxfp4 (OCP), whose rule it changes on purpose",
            same_rule=False,
        ),
    ]


PEER = Peer("compressed_tensors", "compressed-tensors", load, "https://github.com/vllm-project/compressed-tensors")
