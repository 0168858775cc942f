"""Shared pieces of the GPU benchmark scripts in `scripts/`.

Each benchmark script keeps its own stages and `main`; what they share lives here, once:

- `benchkit.record`: provenance of a result file (device, versions, date, command), progress logs
  and saving the JSON after every stage;
- `benchkit.timing`: the timers (CUDA-graph replays, median; CUDA events) and the card's copy
  ceiling, measured one way for every page;
- `benchkit.kvcaches`: the decode-attention benchmarks' shapes, caches (FP4 pools of both recipes,
  their page blocks, BF16 and FP8 caches from the same values), request indices, the variant
  runner and the float64 oracle check;
- `benchkit.upstream`: SGLang's released files, read from the checkout's `.cache/` folder.

A script run as `python scripts/NAME.py` has `scripts/` on its import path, so `import benchkit`
needs no path edits; pytest adds `scripts/` through `pyproject.toml`.
"""
