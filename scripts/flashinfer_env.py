"""Load the trimmed FlashInfer bundle and JIT-compile its modules once, with compile times.

`scripts/flashinfer_bundle.py` writes the bundle (`build/flashinfer`) and
`scripts/flashinfer_install.sh` installs it on the GPU machine; this module is what Python code
there calls:

* [`activate`][flashinfer_env.activate] puts the trimmed package and its dependencies on
  `sys.path` (without running FlashInfer's top-level `__init__`: the bundle's lazy one) and
  points FlashInfer's JIT cache at `build/flashinfer-run/ws`, so that every process of one run
  reuses what the first one compiled;
* [`prebuild`][flashinfer_env.prebuild] compiles a list of JIT modules, several at a time on
  all CPU cores, each the way FlashInfer's first use would (its own ninja run in its own folder,
  under its lock, so the wrappers find it built), and returns each module's compile time from
  its ninja log (sum and span of its objects) plus the wall time of the run.

Nothing here compiles anything on import; FlashInfer itself is imported only by `activate`'s
callers.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = Path(os.environ.get("FLASHINFER_RUN", ROOT / "build" / "flashinfer-run"))
"""Where `flashinfer_install.sh` installs the bundle (`pkg/`, `site/`) and the JIT cache lives (`ws/`)."""


class BundleMissing(RuntimeError):
    """The trimmed FlashInfer is not installed (the message says which command installs it)."""


def activate(run: Path = RUN) -> dict:
    """Make the installed bundle importable and set FlashInfer's JIT environment.

    Args:
        run: the folder `scripts/flashinfer_install.sh` installed into (`pkg/` and `site/`).

    Returns:
        `{"flashinfer": version, "tvm_ffi": version, "jit_dir": path, "bundle_manifest": ...}`.

    Raises:
        BundleMissing: `pkg/flashinfer` or `site/` is absent.
    """
    pkg, site = run / "pkg", run / "site"
    if not (pkg / "flashinfer").is_dir() or not site.is_dir():
        raise BundleMissing(f"no installed FlashInfer bundle under {run}: run 'bash scripts/flashinfer_install.sh'")
    for p in (str(site), str(pkg)):
        if p not in sys.path:
            sys.path.insert(0, p)
    ws = run / "ws"
    ws.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FLASHINFER_WORKSPACE_BASE", str(ws))
    os.environ.setdefault("FLASHINFER_JIT_BUILD_LOG", str(ws / "jit_builds.jsonl"))
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 8))
    import flashinfer  # the bundle's lazy __init__: imports nothing else
    import tvm_ffi

    from flashinfer.jit import env as jit_env

    manifest = run / "manifest.json"
    return {
        "flashinfer": flashinfer.__version__,
        "flashinfer_file": str(Path(flashinfer.__file__).relative_to(run)),
        "tvm_ffi": getattr(tvm_ffi, "__version__", "unknown"),
        "jit_dir": _publishable(Path(jit_env.FLASHINFER_JIT_DIR)),
        "bundle_sha256_of_wheel": json.loads(manifest.read_text())["wheel_sha256"] if manifest.is_file() else None,
        "python": platform.python_version(),
    }


def _publishable(path: Path) -> str:
    """A path inside the checkout, relative to it (a result file names no machine's folders)."""
    root = Path(__file__).resolve().parents[1]
    path = path.resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name


def _ninja_log(jit_dir: Path) -> list[tuple[int, int, str]]:
    """`(start_ms, end_ms, output)` of each object ninja built in `jit_dir` (newest entry per output)."""
    path = jit_dir / ".ninja_log"
    if not path.is_file():
        return []
    rows: dict[str, tuple[int, int, str]] = {}
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) >= 4:
            rows[parts[3]] = (int(parts[0]), int(parts[1]), parts[3])
    return list(rows.values())


def _module_of(output: str, jit_dir: Path) -> str:
    """The module folder an object of ninja's log belongs to (outputs are absolute or relative)."""
    p = Path(output)
    try:
        p = p.relative_to(jit_dir)
    except ValueError:
        pass
    return p.parts[0] if p.parts else ""


def _build_module(spec, jobs: int) -> str | None:
    """Compile one module as FlashInfer's own first-use build does (`JitSpecNvcc.build`): its
    ninja file, run **in the module's folder**, under the module's lock. Returns ninja's output
    tail on failure.

    The folder matters: ninja keeps its log (`.ninja_log`, `.ninja_deps`) in the folder it runs
    in, and rebuilds every output its log does not list ("command line not found in log"). The
    wrappers' `build_and_load` runs ninja in the module's folder, so a module built from any
    other folder (one ninja file including every module with `subninja`) is compiled a second
    time on first use. The lock makes a wrapper that asks for a module while it is being built
    wait for it instead of compiling it alongside.
    """
    import subprocess

    from filelock import FileLock

    with FileLock(str(spec.lock_path), thread_local=False):
        spec.write_ninja()
        workdir = Path(spec.build_dir).resolve()
        cmd = ["ninja", "-v", "-C", str(workdir), "-f", str(Path(spec.ninja_path).resolve()), "-j", str(jobs)]
        r = subprocess.run(cmd, cwd=str(workdir), capture_output=True, text=True)
    return None if r.returncode == 0 else f"ninja failed for {spec.name}: {(r.stdout + r.stderr)[-3000:]}"


def prebuild(specs: dict, log=print, parallel: int | None = None) -> dict:
    """Compile JIT modules, several at a time; a module already compiled is not rebuilt.

    Each module is built in its own folder, under its lock (`_build_module`): exactly what the
    wrappers' first use would run, so they then find nothing to do. `parallel` modules (default
    `FLASHINFER_PREBUILD_PARALLEL`, else 3) compile at once, in the order given, each with
    `MAX_JOBS // parallel` ninja jobs (`MAX_JOBS`: every core by default).

    Args:
        specs: label -> FlashInfer `JitSpec` (from `flashinfer.jit` generators), most wanted first.
        log: progress printer.
        parallel: modules compiled at once.

    Returns:
        `{"wall_s", "max_jobs", "parallel", "error", "modules": {label: {"name", "compiled_before",
        "compiled", "objects", "compile_s_sum", "compile_s_span", "done_after_s"}}}`: per module the
        seconds its objects took (sum over objects, and first start to last end, from the module's
        own ninja log) and when it was done, counted from the start of this call.
    """
    from concurrent.futures import ThreadPoolExecutor

    total = int(os.environ.get("MAX_JOBS") or os.cpu_count() or 8)
    parallel = max(1, int(parallel or os.environ.get("FLASHINFER_PREBUILD_PARALLEL") or 3))
    jobs = max(1, total // parallel)
    before = {label: bool(spec.is_compiled) for label, spec in specs.items()}
    todo = [label for label, done in before.items() if not done]
    log(f"[flashinfer] JIT: {len(todo)} of {len(specs)} modules to compile ({', '.join(todo) or 'none'}), "
        f"{parallel} at a time with {jobs} ninja jobs each")
    t0 = time.perf_counter()
    done_after: dict = {}

    def one(label):
        err = _build_module(specs[label], jobs)
        done_after[label] = round(time.perf_counter() - t0, 1)
        log(f"[flashinfer]   {label} {'FAILED' if err else 'compiled'} after {done_after[label]:.0f} s")
        return err

    errors = []
    if todo:
        with ThreadPoolExecutor(min(parallel, len(todo))) as ex:
            errors = [e for e in ex.map(one, todo) if e]
    wall = time.perf_counter() - t0
    modules = {}
    for label, spec in specs.items():
        mine = _ninja_log(Path(spec.build_dir))
        modules[label] = {
            "name": spec.name,
            "compiled_before": before[label],
            "compiled": bool(spec.is_compiled),
            "objects": len(mine),
            "compile_s_sum": round(sum(e - s for s, e, _ in mine) / 1000, 1),
            "compile_s_span": round((max(e for _, e, _ in mine) - min(s for s, _, _ in mine)) / 1000, 1) if mine else 0.0,
            "done_after_s": done_after.get(label),
        }
        log(f"[flashinfer]   {label:<28} {spec.name:<60} objects {len(mine):>3}  "
            f"sum {modules[label]['compile_s_sum']:>7.1f} s  span {modules[label]['compile_s_span']:>6.1f} s")
    error = "\n".join(e[-1500:] for e in errors) or None
    log(f"[flashinfer] JIT wall {wall:.1f} s" + (f"  ERROR {error[:300]}" if error else ""))
    return {"wall_s": round(wall, 1), "max_jobs": total, "parallel": parallel, "error": error, "modules": modules}


def jit_builds_since(offset: int = 0) -> list[dict]:
    """FlashInfer's own build records (`FLASHINFER_JIT_BUILD_LOG`) from line `offset` on: a
    module the wrappers compiled on first use (not prebuilt) shows up here with its wall time."""
    path = os.environ.get("FLASHINFER_JIT_BUILD_LOG")
    if not path or not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines()[offset:] if line.strip()]


GROUPS = ("writers", "nvfp4_decode", "baselines")
"""`writers`: the page module (standard and 4-over-6) and the paged dequantize; `nvfp4_decode`:
the FA2 tensor-core decode module over NVFP4; `baselines`: FlashInfer's BF16 and FP8 decode
modules (FA2 tensor cores and CUDA cores), all at the headline head dim."""


def specs_for(groups, head_dim: int = 128) -> dict:
    """Label -> JitSpec for the named groups, in the order the groups are named (`prebuild`
    starts the first ones first). Imports FlashInfer: call `activate` first."""
    import flashinfer_harness as fh

    specs = {}
    for group in groups:
        if group == "writers":
            specs.update(fh.writer_specs())
        elif group == "nvfp4_decode":
            specs.update(fh.jit_specs(["flashinfer_nvfp4_fa2"], fh.Shape(head_dim=head_dim)))
        elif group == "baselines":
            specs.update(fh.jit_specs([b for b in fh.BACKENDS if b != "flashinfer_nvfp4_fa2"], fh.Shape(head_dim=head_dim)))
        else:
            raise ValueError(f"unknown group {group!r}; groups are {GROUPS}")
    return specs


def verify_headers(specs: dict, jobs: int = 2, log=print) -> dict:
    """Preprocess (`nvcc -E`, host and device passes) every translation unit of the given modules
    against the installed bundle: proves that every `#include` resolves in the trimmed tree.

    Nothing is compiled: each module's ninja compile command is rewritten from `-c IN -o OUT` to
    `-E IN -o /dev/null`. Usable on a machine without a GPU when `FLASHINFER_CUDA_ARCH_LIST`
    names the target (e.g. `9.0a`).

    Returns:
        label -> `{"units": n, "failed": {unit: first error line}}`.
    """
    import re
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    out = {}
    for label, spec in specs.items():
        spec.write_ninja()
        cmds = subprocess.run(["ninja", "-f", str(spec.ninja_path), "-t", "commands"], cwd=str(spec.build_dir),
                              capture_output=True, text=True, check=True).stdout.splitlines()
        units = []
        for c in cmds:
            m = re.search(r" -c (\S+) -o \S+", c)
            if m and ("nvcc" in c or " c++ " in c or c.startswith("c++")):
                c = re.sub(r"--generate-dependencies-with-compile -MF \S+", "", c)
                c = re.sub(r"-MMD -MF \S+", "", c)
                units.append((Path(m.group(1)).name, c.replace(m.group(0), f" -E {m.group(1)} -o /dev/null")))

        def run(unit):
            name, cmd = unit
            r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
            err = next((line for line in r.stderr.splitlines() if "error" in line), r.stderr[-300:])
            return name, (None if r.returncode == 0 else err)

        with ThreadPoolExecutor(jobs) as ex:
            results = list(ex.map(run, units))
        out[label] = {"units": len(units), "failed": {n: e for n, e in results if e}}
        log(f"[flashinfer] headers {label:<28} {len(units)} units, {len(out[label]['failed'])} failed "
            + (json.dumps(out[label]["failed"])[:400] if out[label]["failed"] else ""))
    return out


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="JIT-compile FlashInfer modules of the trimmed bundle, with timings")
    ap.add_argument("command", choices=["prebuild", "verify-headers", "info"])
    ap.add_argument("--groups", default=",".join(GROUPS), help=f"comma-separated, from {GROUPS}")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--out", default=None, help="append this run's record to a JSON file (a list of records)")
    args = ap.parse_args(argv)
    env = activate()
    print(f"[flashinfer] {json.dumps(env)}", flush=True)
    if args.command == "info":
        return 0
    groups = [g for g in args.groups.split(",") if g]
    if args.command == "verify-headers":
        res = verify_headers(specs_for(groups, args.head_dim))
        return 0 if not any(r["failed"] for r in res.values()) else 1
    rec = prebuild(specs_for(groups, args.head_dim))
    rec.update({"groups": groups, "flashinfer": env["flashinfer"], "nvcc_threads": os.environ.get("FLASHINFER_NVCC_THREADS", "1"),
                "cpu_count": os.cpu_count()})
    if args.out:
        path = Path(args.out)
        runs = json.loads(path.read_text()) if path.is_file() else []
        runs.append(rec)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(runs, indent=1) + "\n")
    return 0 if not rec["error"] else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
