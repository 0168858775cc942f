"""Provenance of a benchmark result, progress logs, and saving the JSON after every stage."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import triton

from benchkit import timing
from provenance import command_line

ROOT = Path(__file__).resolve().parents[2]
"""The checkout (the folder holding `scripts/`)."""


def why(e: BaseException) -> str:
    """An exception as a one-line reason for a data file, without the paths of the machine it ran
    on (the repository root becomes `.`, the interpreter `python`).

    Examples:
        >>> why(FileNotFoundError(str(ROOT / ".cache" / "x")))
        'FileNotFoundError: ./.cache/x'
    """
    text = f"{type(e).__name__}: {e}".replace(str(ROOT), ".")
    return text.replace(sys.executable, "python") if sys.executable else text


def log(*args) -> None:
    """Print one progress line now (unbuffered, so a run cut short still shows how far it got)."""
    print(*args, flush=True)


def versions() -> dict:
    """Python, torch, Triton, CUDA and, on a GPU machine, the driver."""
    v = {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
         "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        try:
            v["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                         capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except Exception:  # noqa: BLE001 - informational only
            v["driver"] = None
    return v


def device_for(smoke: bool) -> str | None:
    """`"cuda"` for a full run on a GPU, `"cpu"` for `--smoke` under the interpreter, `None` (after
    saying why) when neither is possible."""
    if torch.cuda.is_available() and not smoke:
        return "cuda"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "cpu"
    log("no GPU: run with --smoke and TRITON_INTERPRET=1")
    return None


def run_record(script: str, argv: list[str] | None, *, smoke: bool, gpu: bool) -> dict:
    """What every result JSON starts with: device (with its SM count), versions, date, the command
    that reproduces it (`provenance.command_line`: no `--out`, no absolute path) and whether it was
    a `--smoke` run."""
    cpu = f"CPU ({platform.processor() or platform.machine()}), Triton interpreter"
    rec = {"device": torch.cuda.get_device_name() if gpu else cpu, "versions": versions(),
           "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "command": command_line(script, sys.argv[1:] if argv is None else argv),
           "smoke": smoke}
    if gpu:
        rec["sm_count"] = torch.cuda.get_device_properties(0).multi_processor_count
    return rec


class Saver:
    """`save(stage)`: write `res` to `out` with the stage reached, the elapsed time and the timers'
    method and fallback count, and say so (a run cut short keeps what it measured)."""

    def __init__(self, res: dict, out: str | Path):
        self.res, self.path, self.t0 = res, Path(out), time.time()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.time() - self.t0

    def __call__(self, stage: str) -> None:
        self.res["completed_stage"], self.res["elapsed_s"] = stage, self.elapsed()
        self.res["timing"] = timing.stats()
        self.path.write_text(json.dumps(self.res, indent=1) + "\n")
        log(f"  ({stage} done at {self.res['elapsed_s']:.0f} s; saved {self.path})")
