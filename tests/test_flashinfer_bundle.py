"""The tooling that trims FlashInfer's wheel and loads it on the GPU machine (no network, no GPU)."""

from __future__ import annotations

import doctest
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import flashinfer_bundle as fb
import flashinfer_env as fenv

ROOT = Path(__file__).resolve().parents[1]


def test_docstring_examples_run():
    assert doctest.testmod(fb).failed == 0


def _package(tmp_path: Path) -> Path:
    pkg = tmp_path / "fakepkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from .light import f as f
        from .heavy import boom as boom
        from . import sub as sub
    """))
    (pkg / "light.py").write_text("def f():\n    return 'light'\n")
    (pkg / "heavy.py").write_text("raise ImportError('the heavy module was imported')\nboom = 1\n")
    (pkg / "sub" / "__init__.py").write_text("from ..light import f as g\n")
    return pkg


def test_lazy_init_imports_nothing_until_a_name_is_used(tmp_path):
    pkg = _package(tmp_path)
    init = pkg / "__init__.py"
    init.write_text(fb.lazy_init_source(init.read_text(), "fakepkg"))
    code = textwrap.dedent("""
        import sys, fakepkg
        assert 'fakepkg.heavy' not in sys.modules and 'fakepkg.light' not in sys.modules
        import fakepkg.sub
        assert fakepkg.f() == 'light' and fakepkg.sub.g() == 'light'
        assert 'f' in dir(fakepkg)
        try:
            fakepkg.boom
        except ImportError as err:
            assert 'heavy module' in str(err)
        else:
            raise AssertionError('boom resolved without importing heavy')
        try:
            fakepkg.nothing
        except AttributeError as err:
            assert "has no attribute 'nothing'" in str(err)
        print('ok')
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_original_init_would_import_the_heavy_module(tmp_path):
    """The control: without the lazy init the same import fails (so the test above can fail)."""
    _package(tmp_path)
    out = subprocess.run([sys.executable, "-c", "import fakepkg.sub"], cwd=tmp_path, capture_output=True, text=True)
    assert "the heavy module was imported" in out.stderr


def test_function_level_imports_are_found_only_in_the_named_functions():
    src = textwrap.dedent("""
        from .top import x
        def wanted():
            from .jit.page import gen
            from ..elsewhere import y
            import flashinfer.triton.page
        def other():
            from .cute_dsl import z
        class W:
            def m(self):
                from .a.b import c
    """)
    found = fb.function_imports(src, "flashinfer.decode", False, ("wanted", "W"))
    assert {"flashinfer.jit.page", "flashinfer.jit.page.gen", "flashinfer.triton.page", "flashinfer.a.b"} <= found
    assert not any("cute_dsl" in m or m.startswith("flashinfer.top") for m in found)


def test_include_closure_follows_both_branches_and_reports_system_headers(tmp_path):
    data = tmp_path / "data"
    (data / "include" / "fi").mkdir(parents=True)
    (data / "csrc").mkdir()
    (data / "csrc" / "k.cu").write_text('#include <fi/a.cuh>\n#include "local.h"\n#include <cuda_fp8.h>\n')
    (data / "csrc" / "local.h").write_text("int local;\n")
    (data / "include" / "fi" / "a.cuh").write_text('#if X\n#include "b.cuh"\n#else\n#include <fi/c.cuh>\n#endif\n')
    (data / "include" / "fi" / "b.cuh").write_text("")
    (data / "include" / "fi" / "c.cuh").write_text("")
    (data / "include" / "fi" / "unused.cuh").write_text("")
    files, unresolved = fb.include_closure(data, ["csrc/k.cu"], ("include", "csrc"))
    names = {f.name for f in files}
    assert names == {"k.cu", "local.h", "a.cuh", "b.cuh", "c.cuh"}
    assert unresolved == {"cuda_fp8.h"}


def test_missing_modules_are_read_from_import_errors():
    errors = {"flashinfer.decode": "ModuleNotFoundError: No module named 'tqdm'",
              "flashinfer.x": "ModuleNotFoundError: No module named 'flashinfer.gone'",
              "flashinfer.y": "ModuleNotFoundError: No module named 'cuda.bindings'"}
    assert fb.missing_modules(errors) == {"tqdm", "cuda"}


def test_ninja_log_is_grouped_by_module(tmp_path):
    jit = tmp_path / "cached_ops"
    jit.mkdir()
    (jit / ".ninja_log").write_text("# ninja log v6\n"
                                    f"0\t1500\t0\t{jit}/page/csrc_page.cuda.o\t1\n"
                                    "100\t900\t0\tpage/csrc_flashinfer_page_binding.cuda.o\t2\n"
                                    f"0\t2000\t0\t{jit}/page/page.so\t3\n"
                                    f"50\t60000\t0\t{jit}/batch_prefill_x/kernel.cuda.o\t4\n")
    rows = fenv._ninja_log(jit)
    assert sorted(fenv._module_of(r[2], jit) for r in rows) == ["batch_prefill_x", "page", "page", "page"]


class _Spec:
    """A stand-in JitSpec with FlashInfer's ninja conventions: absolute outputs under the module's
    folder, objects with gcc-style depfiles (`deps = gcc`), one linked library."""

    def __init__(self, root: Path, name: str, fail: bool = False):
        self.name, self.fail = name, fail
        self.build_dir, self.lock_path = root / name, root / "tmp" / f"{name}.lock"
        self.ninja_path = self.build_dir / "build.ninja"
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    @property
    def is_compiled(self) -> bool:
        return (self.build_dir / f"{self.name}.so").exists()

    def write_ninja(self) -> None:
        d = self.build_dir.resolve()
        d.mkdir(parents=True, exist_ok=True)
        for i in (1, 2):
            (d / f"s{i}.cu").write_text(f"source {i}\n")
        compile_cmd = "false" if self.fail else "cp $in $out && echo \"$out: $in\" > $out.d"
        self.ninja_path.write_text("\n".join([
            "rule cuda_compile", f"  command = {compile_cmd}", "  depfile = $out.d", "  deps = gcc",
            "rule link", "  command = cat $in > $out",
            f"build {d}/s1.cuda.o: cuda_compile {d}/s1.cu", f"build {d}/s2.cuda.o: cuda_compile {d}/s2.cu",
            f"build {d}/{self.name}.so: link {d}/s1.cuda.o {d}/s2.cuda.o", f"default {d}/{self.name}.so", ""]))


def _first_use_would_rebuild(spec: _Spec) -> bool:
    """What FlashInfer's first use runs (ninja in the module's folder), as a dry run."""
    r = subprocess.run(["ninja", "-n", "-C", str(spec.build_dir), "-f", str(spec.ninja_path)], capture_output=True,
                       text=True, check=True)
    return "no work to do" not in r.stdout


@pytest.mark.skipif(shutil.which("ninja") is None, reason="needs ninja on PATH")
def test_prebuild_leaves_nothing_for_the_first_use_to_compile(tmp_path):
    specs = {"a": _Spec(tmp_path, "mod_a"), "b": _Spec(tmp_path, "mod_b")}
    rec = fenv.prebuild(specs, log=lambda *a: None, parallel=2)
    assert rec["error"] is None and rec["parallel"] == 2
    for label, spec in specs.items():
        m = rec["modules"][label]
        assert m["compiled"] and not m["compiled_before"] and m["objects"] == 3 and m["done_after_s"] is not None
        assert not _first_use_would_rebuild(spec)
    again = fenv.prebuild(specs, log=lambda *a: None)
    assert all(m["compiled_before"] and m["done_after_s"] is None for m in again["modules"].values())


@pytest.mark.skipif(shutil.which("ninja") is None, reason="needs ninja on PATH")
def test_one_ninja_run_over_subninjas_would_be_compiled_again(tmp_path):
    """Why the prebuild builds in each module's folder: built from a master file in the parent
    folder (one ninja run, `subninja` per module), the module's own folder has no ninja log, and
    the first use compiles everything again."""
    spec = _Spec(tmp_path, "mod_c")
    spec.write_ninja()
    (tmp_path / "all.ninja").write_text(f"subninja {spec.ninja_path.resolve()}\n")
    subprocess.run(["ninja", "-C", str(tmp_path), "-f", str(tmp_path / "all.ninja")], capture_output=True, check=True)
    assert spec.is_compiled and _first_use_would_rebuild(spec)


@pytest.mark.skipif(shutil.which("ninja") is None, reason="needs ninja on PATH")
def test_prebuild_reports_a_module_that_fails(tmp_path):
    specs = {"ok": _Spec(tmp_path, "mod_ok"), "bad": _Spec(tmp_path, "mod_bad", fail=True)}
    rec = fenv.prebuild(specs, log=lambda *a: None, parallel=1)
    assert rec["modules"]["ok"]["compiled"] and not rec["modules"]["bad"]["compiled"]
    assert "ninja failed for mod_bad" in rec["error"]


def test_install_script_says_what_to_run_without_a_bundle(tmp_path):
    out = subprocess.run(["bash", str(ROOT / "scripts" / "flashinfer_install.sh")], capture_output=True, text=True,
                         env={"FLASHINFER_BUNDLE": str(tmp_path / "none"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 1 and "python scripts/flashinfer_bundle.py" in out.stderr


def test_shell_scripts_parse():
    for name in ("flashinfer_install.sh", "flashinfer_gpu.sh", "gpu_all.sh"):
        assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / name)]).returncode == 0, name


GPU_ALL_STAGES = ["setup_project", "setup_flashinfer", "a1_kernel_tests", "a2_decode_attention_tests", "e_mla_bench",
                  "d_quant_bench", "c_decode_bench", "b1_flashinfer_conformance", "b2_flashinfer_gpu_tests",
                  "b3_flashinfer_4over6_tests"]


def _gpu_all_dry(tmp_path, **env) -> dict:
    """`DRY_RUN=1 bash scripts/gpu_all.sh`: stage name -> (budget, command line)."""
    import os
    import re

    run_env = dict(os.environ, DRY_RUN="1", OUT=str(tmp_path / "out"), WORK=str(tmp_path / "work"),
                   PYTHON=sys.executable, **env)
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_all.sh")], capture_output=True, text=True, env=run_env,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    stages = {m.group(1): (int(m.group(2)), m.group(3))
              for m in re.finditer(r"\[gpu_all\] \+\d+ s: (\w+): would run \(budget (\d+) s\): (.*)", r.stdout)}
    assert (tmp_path / "out" / "gpu_all.log").read_text().count("would run") == len(stages)
    return stages


def test_gpu_all_runs_every_stage_within_its_budget(tmp_path):
    stages = _gpu_all_dry(tmp_path)
    assert list(stages) == GPU_ALL_STAGES
    assert sum(b for b, _ in stages.values()) <= 560            # within a 10-minute limit per command
    out = tmp_path / "out"
    # the measurements land in $OUT under the names the pages read, every test file exists
    for name, want in (("c_decode_bench", "bench_decode_attention.py"), ("e_mla_bench", "bench_mla_decode_attention.py"),
                       ("d_quant_bench", "bench_quant_kernels.py"), ("b1_flashinfer_conformance", "flashinfer_conformance.py")):
        assert want in stages[name][1], name
    assert f"--out {out}/decode_attention.json" in stages["c_decode_bench"][1]
    assert f"--out {out}/mla_decode_attention.json" in stages["e_mla_bench"][1]
    assert f"--out {out}/quant_kernels.json" in stages["d_quant_bench"][1]
    for _, cmd in stages.values():
        for word in cmd.split():
            if word.startswith(("tests/", "scripts/")):
                assert (ROOT / word).is_file(), word
    # the flags it passes exist: the decode benchmark leaves the sweep a minute of its budget
    bench = (ROOT / "scripts" / "bench_decode_attention.py").read_text()
    assert '"--no-shapes"' in bench and '"--budget-s"' in bench and '"--no-tune"' in (ROOT / "scripts" / "bench_quant_kernels.py").read_text()
    budget, cmd = stages["c_decode_bench"]
    assert f"--budget-s {budget - 60}" in cmd
    assert "-m gpu" in stages["a2_decode_attention_tests"][1] and "not flashinfer" in stages["a1_kernel_tests"][1]


def test_gpu_all_budgets_are_settable_and_capped_by_the_total(tmp_path):
    stages = _gpu_all_dry(tmp_path, T_C="100", DECODE_ARGS="--no-sweep", TOTAL="200")
    assert stages["c_decode_bench"][0] == 100 and "--no-sweep --budget-s 40" in stages["c_decode_bench"][1]
    assert sum(b for b, _ in stages.values()) > 200      # a dry run takes no time: the cap is per stage, on the clock


def test_activate_explains_a_missing_bundle(tmp_path):
    try:
        fenv.activate(tmp_path)
    except fenv.BundleMissing as err:
        assert "flashinfer_install.sh" in str(err)
    else:
        raise AssertionError("activate accepted an empty folder")
