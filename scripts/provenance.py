"""The command line a result file records: what reproduces it, and nothing about the machine.

Every script that writes a data file under `docs/data/` records the command that made it. That
command must reproduce the numbers and be safe to publish, so it never carries where the file
was written (`--out PATH` is dropped) nor an absolute path (a path inside the repository becomes
relative to it, any other becomes its file name).

Examples:
    >>> from provenance import ROOT, command_line
    >>> command_line("bench_quant_kernels.py", ["--no-tune", "--out", "/somewhere/q.json"])
    'python scripts/bench_quant_kernels.py --no-tune'
    >>> command_line("x.py", ["--json=" + str(ROOT / "docs" / "data" / "x.json"), "--data", "/a/b/c.json"])
    'python scripts/x.py --json=docs/data/x.json --data c.json'
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _publishable(arg: str) -> str:
    flag, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    if not os.path.isabs(value):
        return arg
    path = Path(value).resolve()
    value = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    return f"{flag}{eq}{value}"


def command_line(script: str, argv: list[str]) -> str:
    """`python scripts/SCRIPT ARGS` with `--out PATH` dropped and absolute paths made publishable.

    Args:
        script: the script's file name, for example `"bench_quant_kernels.py"`.
        argv: its arguments (`sys.argv[1:]` or a `main(argv)` list).

    Returns:
        The command, to store in the result file's `command` field.
    """
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif not a.startswith("--out="):
            out.append(_publishable(a))
    return " ".join([f"python scripts/{script}", *out])
