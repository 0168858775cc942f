"""The wheel's size, and the share of it the golden vectors take, measured on a freshly built wheel.

Builds the wheel from a copy of the files that go into it (`pyproject.toml`, `README.md`,
`LICENSE` and the two package folders, as git lists them: tracked or new, not ignored), so that
nothing left over in a `build/` folder can enter it, then reads the archive: its size on disk,
and per part (the golden vectors under `nvfp4_kvcache/golden/`, everything else) the number of
files, their bytes once installed and their compressed bytes inside the archive. The result
goes to `docs/data/package/wheel.json`; the Cookbook renders it (`scripts/tables.py`,
`wheel_size`) and `tests/test_install.py` compares it with the wheel that test builds.

Usage:

```text
python scripts/wheel_size.py            # build, measure, write docs/data/package/wheel.json
python scripts/wheel_size.py --print    # build and measure only
```
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from provenance import ROOT, command_line

OUT = ROOT / "docs" / "data" / "package" / "wheel.json"
WHEEL_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "reference_impl", "kernels")
GOLDEN_PREFIX = "nvfp4_kvcache/golden/"
"""Where the golden vectors sit inside the wheel."""


def _inputs() -> list[str]:
    """The files the wheel is built from, relative to the repository: as git lists them, else every
    file of `WHEEL_INPUTS` outside `__pycache__` (a copy that is not a git checkout)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                                 *WHEEL_INPUTS], cwd=ROOT, check=True, capture_output=True, text=True).stdout
        return [f for f in listed.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        found = [p for name in WHEEL_INPUTS for p in ([ROOT / name] if (ROOT / name).is_file() else (ROOT / name).rglob("*"))]
        return [str(p.relative_to(ROOT)) for p in found if p.is_file() and "__pycache__" not in p.parts]


def build_wheel(out_dir: Path) -> Path:
    """Build the wheel (no dependencies, no build isolation) from a clean copy of its inputs; return its path."""
    files = _inputs()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        for name in files:
            if (ROOT / name).is_file():     # a file deleted in the working tree but still tracked is skipped
                (src / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, src / name)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out_dir), str(src)], check=True, capture_output=True, text=True)
    return next(Path(out_dir).glob("nvfp4_kvcache-*.whl"))


def _part(infos: list[zipfile.ZipInfo]) -> dict:
    return {"files": len(infos), "installed_bytes": sum(i.file_size for i in infos),
            "compressed_bytes": sum(i.compress_size for i in infos)}


def measure(wheel: Path) -> dict:
    """Sizes of one wheel: the archive, the golden vectors in it, and the rest.

    Returns:
        `{"wheel", "wheel_bytes", "total", "golden", "rest"}`; each part holds `files`,
        `installed_bytes` (uncompressed) and `compressed_bytes` (inside the archive, headers not counted).
    """
    with zipfile.ZipFile(wheel) as z:
        infos = [i for i in z.infolist() if not i.is_dir()]
    golden = [i for i in infos if i.filename.startswith(GOLDEN_PREFIX)]
    rest = [i for i in infos if not i.filename.startswith(GOLDEN_PREFIX)]
    return {"wheel": wheel.name, "wheel_bytes": wheel.stat().st_size,
            "total": _part(infos), "golden": _part(golden), "rest": _part(rest)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--print", action="store_true", help="print the measurement, write nothing")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = measure(build_wheel(Path(tmp)))
    data["date"] = datetime.date.today().isoformat()
    data["command"] = command_line("wheel_size.py", sys.argv[1:] if argv is None else argv)
    text = json.dumps(data, indent=1) + "\n"
    if args.print:
        print(text, end="")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"{data['wheel']}: {data['wheel_bytes']} bytes, golden vectors {data['golden']['compressed_bytes']} "
          f"compressed -> {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
