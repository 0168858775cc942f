"""Record how much memory a GPU exposes, as the capacity calculator counts it.

Runs on the GPU machine and writes one JSON file: the device name, `nvidia-smi`'s
`memory.total` (MiB) and driver version, and what CUDA's allocator reports through torch
(`torch.cuda.get_device_properties(0).total_memory`, bytes), with the date and the command
(recorded through `scripts/provenance.py`). On an H200 this writes
`docs/data/capacity/gpu_memory_h200.json`:

```bash
python scripts/gpu_memory.py [--out PATH]
```

`nvfp4_kvcache.capacity.GPUS` takes each card's bytes from such a reading (or a published
`nvidia-smi` output, cited there); `tests/test_capacity.py` checks that the two agree.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from provenance import command_line  # noqa: E402


def reading(argv: list[str]) -> dict:
    """The card's memory as `nvidia-smi` and torch report it, with the run's provenance."""
    import torch

    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                          "--format=csv,noheader,nounits", "--id=0"],
                         check=True, capture_output=True, text=True).stdout.strip()
    name, mib, driver = (x.strip() for x in smi.split(","))
    props = torch.cuda.get_device_properties(0)
    return {
        "device": name,
        "nvidia_smi_memory_total_mib": int(mib),
        "nvidia_smi_memory_total_bytes": int(mib) * 2**20,
        "torch_total_memory_bytes": props.total_memory,
        "driver": driver,
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda},
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line("gpu_memory.py", argv),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="JSON file to write (default: docs/data/capacity/gpu_memory_MODEL.json, "
                                   "MODEL the last word of the device name, lowercase)")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    data = reading(argv)
    out = Path(args.out) if args.out else \
        ROOT / "docs" / "data" / "capacity" / f"gpu_memory_{data['device'].split()[-1].lower()}.json"
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
