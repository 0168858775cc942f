"""Compile a benchmark's kernels in parallel before it times them.

Triton compiles a kernel the first time it runs with new compile-time arguments, one after another,
seconds each; a benchmark that tries dozens of launch configurations spends minutes on that alone.
`start` runs a script's own `worker(items)` in several processes first (each runs the kernels once
on tiny inputs with the same specialisations), so the kernels land in Triton's on-disk cache and the
timed run finds them there. Nothing here changes what is measured: a kernel the warm-up missed is
compiled when first run, as without it.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from benchkit.record import log


def start(worker, items: list, processes: int):
    """Start `worker(chunk)` on `processes` interleaved chunks of `items` (spawned processes; `worker`
    must be importable, and return a list of error strings). Returns `wait()`, which blocks until
    all are done and returns their errors (a process that died counts as one error)."""
    ex = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
    futs = [ex.submit(worker, items[i::processes]) for i in range(processes) if items[i::processes]]
    log(f"  compiling {len(items)} kernels in {len(futs)} processes")

    def wait() -> list[str]:
        errors = []
        for f in futs:
            try:
                errors += f.result()
            except Exception as e:  # noqa: BLE001 - its kernels compile in the main process instead
                errors.append(f"worker: {type(e).__name__}: {e}")
        ex.shutdown()
        return errors

    return wait
