"""Every kernel compiles for sm_90 (H100/H200) on this machine, GPU or not, with Triton's own ptxas, without spills.

Runs `scripts/compile_sm90.py --quick` in a subprocess without `TRITON_INTERPRET` (the
interpreter replaces the compiler). The full variant list is `python scripts/compile_sm90.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nvfp4_kvcache.recipes import RECIPES

ROOT = Path(__file__).resolve().parents[1]


def test_every_kernel_compiles_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "compile_sm90.py"), "--quick"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "all compiled for sm_90 (0 failures)" in proc.stdout
    # each recipe: quantize from 3 input dtypes, dequantize to 4 output dtypes; none spills
    assert proc.stdout.count("\nok ") + proc.stdout.startswith("ok ") == 7 * len(RECIPES), proc.stdout


def test_committed_sass_counts_are_the_kernels_of_today():
    """`docs/data/perf/quant_kernels_sass.json` (rendered in the Kernels chapter) was counted from
    the kernels as they are: recount one recipe's four operations and compare (a kernel change
    without a new count fails here; run the command the JSON records)."""
    import json

    data = json.loads((ROOT / "docs" / "data" / "perf" / "quant_kernels_sass.json").read_text())
    recipe = "mxfp4"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = ROOT / "build" / "test_quant_kernels_sass.json"
    out.parent.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "sass_quant_kernels.py"), "--recipe", recipe,
                           "--json", str(out)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fresh = {r["op"]: r["sass"] for r in json.loads(out.read_text())["rows"]}
    committed = {r["op"]: r["sass"] for r in data["rows"] if r["recipe"] == recipe}
    assert fresh == committed and len(fresh) == 4, (fresh, committed)
