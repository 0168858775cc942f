"""Timers and the card's ceilings: one method each, for every benchmark page.

- `time_graph`: the median time of one call, from CUDA-graph replays of many calls (how a serving
  engine runs decode: no Python or launch overhead in the number);
- `time_events`: the median of single calls timed with CUDA events (Triton's `do_bench`, L2 flushed
  before each call): what a plain Python caller waits for;
- `ceilings`: the copy bandwidth (`dst.copy_(src)` of 2 GiB, bytes read + written, CUDA events,
  median) against which every "of copy" is measured, and a read-only reduction.

Under `--smoke` (the interpreter on a CPU) each timer is one wall-clock call: meaningless numbers,
which keep the scripts running in CI.
"""

from __future__ import annotations

import math
import statistics
import time

import torch

_STATS = {"graph": "CUDA-graph replays of many calls, median per call", "events": "triton.testing.do_bench "
          "(CUDA events, L2 flushed before each call), median", "fallbacks": 0}


def stats() -> dict:
    """The timers' methods and how many graph timings fell back to events (a call that could not
    be captured)."""
    return dict(_STATS)


def _wall(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def time_events(fn, smoke: bool = False) -> float:
    """Median milliseconds of one call of `fn` (CUDA events around each call, L2 flushed first)."""
    if smoke:
        return _wall(fn)
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))


def time_graph(fn, smoke: bool = False, target_ms: float = 5.0, replays: int = 20) -> float:
    """Median milliseconds per call of `fn`, replayed from a CUDA graph.

    `fn` is called once (compile, allocate), timed roughly with events, then captured `n` times
    into one graph (`n` calls take about `target_ms`); the graph is replayed `replays` times, each
    replay timed with events, and the median replay time over `n` is returned. A call that cannot
    be captured is timed with `time_events` instead, and counted in `stats()["fallbacks"]`.
    """
    if smoke:
        return _wall(fn)
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(3):
        fn()
    end.record()
    torch.cuda.synchronize()
    n = max(1, min(500, math.ceil(target_ms / max(start.elapsed_time(end) / 3, 1e-3))))
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            for _ in range(n):
                fn()
    except Exception:  # noqa: BLE001 - not capturable: time with events instead, and say so
        _STATS["fallbacks"] += 1
        torch.cuda.synchronize()
        return time_events(fn)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / n)
    del graph
    return float(statistics.median(times))


def ceilings(device: str, smoke: bool = False, nbytes: int = 1 << 31) -> dict:
    """The card's ceilings, measured here: `dst.copy_(src)` of `nbytes` (bytes read + written) and
    a read-only reduction (`src.sum()` as float32, bytes read), both timed with `time_events`.

    Returns:
        `{"bytes_per_s", "ms", "bytes", "method", "read_bytes_per_s", "read_ms", "read_bytes", "read_method"}`.
    """
    if smoke:
        nbytes = 1 << 16
    src = torch.empty(nbytes // 2, dtype=torch.int16, device=device).random_()
    dst = torch.empty_like(src)
    ms = time_events(lambda: dst.copy_(src), smoke)
    f32 = src.view(torch.float32)  # random bits; NaNs in the sum do not change the time
    ms_read = time_events(lambda: f32.sum(), smoke)
    moved = 2 * src.numel() * 2
    out = {"bytes": moved, "ms": ms, "bytes_per_s": moved / (ms * 1e-3),
           "method": f"dst.copy_(src) of {nbytes / 2**30:g} GiB, bytes read + written; CUDA events, median",
           "read_bytes": f32.numel() * 4, "read_ms": ms_read, "read_bytes_per_s": f32.numel() * 4 / (ms_read * 1e-3),
           "read_method": f"float32 src.sum() over {nbytes / 2**30:g} GiB, bytes read; CUDA events, median"}
    return out
