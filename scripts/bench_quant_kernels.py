"""Benchmark the FP4 kernels on a GPU and write `docs/data/perf/quant_kernels.json`.

Measures, in one run on one card:

* the card's copy bandwidth (`dst.copy_(src)`, bytes read + bytes written) as the ceiling;
* quantize, fused K+V store into a pool layer (random slots), dequantize and gather-dequantize
  (bf16 out) at 131072 tokens x 8 heads x 128 (bf16), for nvfp4, fp4_mx_block16 and mxfp4:
  (bytes read + bytes written) / median time, and the fraction of the copy bandwidth;
* upstream SGLang 0.5.23's `FP4MXBlock16KVQuantizeUtil.batched_quantize` / `batched_dequantize`
  (its own `@torch.compile`) on the same input, and whether its bytes equal ours;
* a sweep over token counts 1 .. 131072 (8 heads x 128): small batches are launch/latency bound,
  so each row has the median time of plain launches and of CUDA-graph replays.

Usage (on the GPU machine):

```bash
python scripts/bench_quant_kernels.py --out docs/data/perf/quant_kernels.json
```

The Kernels chapter renders its tables from the JSON at build time (`scripts/kernel_tables.py`);
`python scripts/plot_quant_kernels.py` redraws its figure from the JSON, anywhere.

With the sweep (the default), the run records each kind and recipe's fastest launch under
`winners` and prints them as the card's entry of `nvfp4_kvcache_triton.launch.DEVICE_LAUNCHES`
again with `--launch-table`:

```bash
python scripts/bench_quant_kernels.py --launch-table docs/data/perf/quant_kernels.json
```

The upstream file is read from `.cache/sglang-0.5.23/src` (`benchkit.upstream`; extracted from
the wheel once, where pip can reach the registry).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import nvfp4_kvcache_triton
from benchkit.record import ROOT, log, run_record
from benchkit.timing import ceilings, time_events, time_graph
from benchkit.upstream import SGLANG_VERSION, load_kvfp4_tensor
from nvfp4_kvcache_triton import launch as kq
from nvfp4_kvcache.recipes import RECIPES, nvfp4_global_scale
from nvfp4_kvcache.recipes.base import PoolScaleLayout

H, D = 8, 128
MAIN_TOKENS = 131072
SWEEP_TOKENS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 16384, 65536, 131072]
RECIPE_NAMES = list(RECIPES)
"""Every recipe of the registry (the kernels branch on the recipe's capabilities, not its name)."""
DEV = "cuda"
SMOKE = False  # --smoke: tiny sizes on the CPU under TRITON_INTERPRET=1, to test this script itself


def median_us(fn) -> float:
    """Median microseconds of one call (CUDA events, `benchkit.timing.time_events`)."""
    return time_events(fn, SMOKE) * 1e3


def graph_us(fn) -> float:
    """Median microseconds per call of CUDA-graph replays (`benchkit.timing.time_graph`)."""
    return time_graph(fn, SMOKE) * 1e3


def fp4_bytes(n_elems: int, recipe: str) -> int:
    """Packed + scale bytes of n_elems values."""
    return n_elems // 2 + n_elems // RECIPES[recipe].block_size


class Case:
    """Inputs and buffers for one recipe at one token count (bf16, H x D)."""

    def __init__(self, recipe: str, tokens: int, pool_slots: int | None = None, seed: int = 0):
        gen = torch.Generator(device=DEV).manual_seed(seed)
        self.recipe, self.t = recipe, tokens
        bs = RECIPES[recipe].block_size
        self.k = torch.randn(tokens, H, D, device=DEV, dtype=torch.bfloat16, generator=gen)
        self.v = torch.randn(tokens, H, D, device=DEV, dtype=torch.bfloat16, generator=gen)
        m = pool_slots or max(tokens, 1024) + 16
        self.loc = torch.randperm(m, device=DEV, generator=gen)[:tokens]
        self.kd = torch.empty(m, H, D // 2, dtype=torch.uint8, device=DEV)
        self.vd = torch.empty_like(self.kd)
        rec = RECIPES[recipe]
        flat = rec.pool_scale_layout is PoolScaleLayout.FLAT
        shape = (m, H * D // bs) if flat else (m, H, D // bs)
        self.ks = torch.empty(shape, dtype=torch.uint8, device=DEV)
        self.vs = torch.empty_like(self.ks)
        self.g = (nvfp4_global_scale(self.k.float().abs().amax(), "amax/448").to(DEV)
                  if rec.global_scale is not None else None)
        self.q = nvfp4_kvcache_triton.quantize(self.k, recipe, global_scale=self.g)
        nvfp4_kvcache_triton.store_kv(self.k, self.v, self.loc, self.kd, self.vd, self.ks, self.vs, recipe, self.g, self.g)

    def ops(self):
        r, n = self.recipe, self.t * H * D
        fp4b = fp4_bytes(n, r)
        return {
            "quantize": (lambda: nvfp4_kvcache_triton.quantize(self.k, r, global_scale=self.g), 2 * n + fp4b),
            # check_slots=False: the slot check reads loc (a device sync), which CUDA-graph capture forbids
            "store_kv": (lambda: nvfp4_kvcache_triton.store_kv(self.k, self.v, self.loc, self.kd, self.vd, self.ks, self.vs,
                                                  r, self.g, self.g, check_slots=False), 2 * (2 * n + fp4b) + 8 * self.t),
            "dequantize": (lambda: nvfp4_kvcache_triton.dequantize(self.q, torch.bfloat16), fp4b + 2 * n),
            "gather_dequantize": (lambda: nvfp4_kvcache_triton.gather_dequantize(self.kd, self.ks, self.loc, r, self.g,
                                                                    torch.bfloat16, check_slots=False),
                                  fp4b + 2 * n + 8 * self.t),
        }


TUNE_ELEMS = (1024, 2048, 4096, 8192)
TUNE_WARPS = (1, 2, 4, 8)
TUNE_PER_THREAD = (8, 64)
"""The sweep: elements per program x warps, keeping 8 to 64 elements per thread (fewer leaves a
thread less than one 16-byte load of bf16; more spills registers on some recipes): 12 launches
per kind and recipe, each compiled once (about a second) and timed for about 0.15 s; with
`TUNED_OPS` and every recipe, 180 launches, about three to four minutes."""


TUNED_OPS = (("quantize", "store_kv"), ("dequantize", "dequantize"), ("gather", "gather_dequantize"))
"""Launch kinds of `nvfp4_kvcache_triton.launch` and the operation each is timed on."""


def tune_grid() -> list[tuple[int, int]]:
    lo, hi = TUNE_PER_THREAD
    return [(e, w) for e in TUNE_ELEMS for w in TUNE_WARPS if lo <= e // (32 * w) <= hi]


def tune():
    """Elements per program x warps, per recipe, for each launch kind (`TUNED_OPS`)."""
    rows = []
    for recipe in RECIPE_NAMES:
        c = Case(recipe, MAIN_TOKENS, seed=1)
        for kind, op in TUNED_OPS:
            scores = {}
            for elems, warps in tune_grid():
                kq.TUNING[f"{kind}_elems:{recipe}"], kq.TUNING[f"{kind}_warps:{recipe}"] = elems, warps
                fn, b = c.ops()[op]
                us = median_us(fn)
                scores[(elems, warps)] = us
                rows.append({"kind": kind, "op": op, "recipe": recipe, "elems": elems, "warps": warps,
                             "us": us, "gbps": b / us / 1e3})
            (elems, warps) = min(scores, key=scores.get)
            kq.TUNING[f"{kind}_elems:{recipe}"], kq.TUNING[f"{kind}_warps:{recipe}"] = elems, warps
            log(f"tune {recipe} {kind}: best elems={elems} warps={warps} {scores[(elems, warps)]:.1f} us "
                f"(worst {max(scores.values()):.1f} us of {len(scores)})")
        del c
    return rows


def sweep_winners(rows: list[dict]) -> dict[str, dict[str, int]]:
    """`{"kind:recipe": {"elems", "warps"}}`: the fastest launch of each kind and recipe of a sweep."""
    best: dict[str, dict] = {}
    for r in rows:
        key = f"{r['kind']}:{r['recipe']}"
        if key not in best or r["us"] < best[key]["us"]:
            best[key] = r
    return {k: {"elems": r["elems"], "warps": r["warps"]} for k, r in best.items()}


def launches_used(device) -> dict[str, dict[str, int]]:
    """The launch of every kind and recipe as the launcher picks it now (overrides, table, defaults)."""
    out = {}
    for recipe in RECIPE_NAMES:
        for kind, _ in TUNED_OPS:
            elems, warps = kq.launch_params(kind, recipe, device)
            out[f"{kind}:{recipe}"] = {"elems": elems, "warps": warps}
    return out


def launch_table(run: dict) -> str:
    """The `DEVICE_LAUNCHES` entry (Python source) of a finished run: its sweep's winners, or
    without a sweep the launches it measured with."""
    entries = sweep_winners(run.get("tuning", [])) or run.get("launches") or {}
    if not entries:  # runs before `launches` was recorded: the per-recipe keys of `tuning_chosen`
        chosen = run.get("tuning_chosen", {})
        entries = {f"{k.split('_elems:')[0]}:{k.split('_elems:')[1]}":
                   {"elems": v, "warps": chosen[k.replace('_elems:', '_warps:')]}
                   for k, v in chosen.items() if "_elems:" in k}
    if not entries:
        raise SystemExit("the run holds neither a tuning sweep nor its launches")
    order = {f"{k}:{r}": (i, j) for i, (k, _) in enumerate(TUNED_OPS) for j, r in enumerate(RECIPE_NAMES)}
    lines = [f"    {json.dumps(run['device'])}: {{"]
    for key in sorted(entries, key=lambda k: order.get(k, (9, k))):
        e = entries[key]
        lines.append(f'        "{key}": {{"elems": {e["elems"]}, "warps": {e["warps"]}}},')
    lines.append("    },")
    return "\n".join(lines)


def upstream_rows(copy_gbps):
    """SGLang 0.5.23's compiled quantizer on the same bf16 input [131072, 8, 128]."""
    util = load_kvfp4_tensor().FP4MXBlock16KVQuantizeUtil
    gen = torch.Generator(device=DEV).manual_seed(0)
    x = torch.randn(MAIN_TOKENS, H, D, device=DEV, dtype=torch.bfloat16, generator=gen)
    n = x.numel()
    t0 = time.time()
    packed, sf = util.batched_quantize(x)
    deq = util.batched_dequantize(packed, sf, torch.bfloat16)
    if not SMOKE:
        torch.cuda.synchronize()
    log(f"upstream torch.compile warm-up: {time.time() - t0:.1f} s")
    ours = nvfp4_kvcache_triton.quantize(x, "fp4_mx_block16")
    same = bool(torch.equal(ours.packed, packed) and torch.equal(ours.scales.reshape(sf.shape), sf))
    same_deq = bool(torch.equal(nvfp4_kvcache_triton.dequantize(ours, torch.bfloat16), deq))
    rows = []
    for op, fn, b in (("quantize", lambda: util.batched_quantize(x), 2 * n + fp4_bytes(n, "fp4_mx_block16")),
                      ("dequantize", lambda: util.batched_dequantize(packed, sf, torch.bfloat16),
                       fp4_bytes(n, "fp4_mx_block16") + 2 * n)):
        us = median_us(fn)
        rows.append({"op": op, "recipe": "fp4_mx_block16", "impl": f"sglang-{SGLANG_VERSION} (torch.compile)",
                     "tokens": MAIN_TOKENS, "heads": H, "head_dim": D, "dtype": "bfloat16", "us": us,
                     "bytes": b, "gbps": b / us / 1e3, "frac_of_copy": b / us / 1e3 / copy_gbps})
        log(f"upstream {op}: {us:.1f} us, {b / us / 1e3:.0f} GB/s")
    return rows, {"bytes_equal_ours": same, "dequantize_equal_ours": same_deq}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs/data/perf/quant_kernels.json"))
    ap.add_argument("--no-tune", action="store_true", help="no sweep: measure with the launches the launcher picks (the card's DEVICE_LAUNCHES entry, else the TUNING defaults)")
    ap.add_argument("--no-upstream", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run under TRITON_INTERPRET=1 (tests the script)")
    ap.add_argument("--launch-table", metavar="JSON",
                    help="print the DEVICE_LAUNCHES entry of a finished run (its sweep's winners) and exit")
    args = ap.parse_args(argv)
    if args.launch_table:
        print(launch_table(json.loads(Path(args.launch_table).read_text())))
        return 0
    global DEV, SMOKE, MAIN_TOKENS, SWEEP_TOKENS
    if args.smoke:
        DEV, SMOKE, MAIN_TOKENS, SWEEP_TOKENS = "cpu", True, 64, [1, 4]
    else:
        assert torch.cuda.is_available(), "needs a CUDA GPU"
    torch.backends.cuda.matmul.allow_tf32 = False
    result = {
        **run_record("bench_quant_kernels.py", argv, smoke=SMOKE, gpu=not SMOKE),
        "shape": {"tokens": MAIN_TOKENS, "heads": H, "head_dim": D, "dtype": "bfloat16"},
        "bytes_rule": "bytes read + bytes written (input once, packed + scale bytes once, loc for pool ops)",
    }
    result["versions"]["sglang_reference"] = f"{SGLANG_VERSION} (kvfp4_tensor.py)"
    result.setdefault("sm_count", None)
    copy = ceilings(DEV, SMOKE)
    copy_gbps = copy["bytes_per_s"] / 1e9
    log(f"copy: {copy_gbps:.0f} GB/s ({copy['method']})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():  # after every phase, so that a run cut short still leaves its numbers
        out.write_text(json.dumps(result, indent=1) + "\n")

    result["copy"] = copy
    result["copy_gbps"] = copy_gbps
    result["tuning"] = [] if (args.no_tune or SMOKE) else tune()
    result["tuning_grid"] = {"elems": list(TUNE_ELEMS), "warps": list(TUNE_WARPS),
                             "elems_per_thread": list(TUNE_PER_THREAD)}
    result["tuning_chosen"] = dict(kq.TUNING)
    result["winners"] = sweep_winners(result["tuning"])  # the DEVICE_LAUNCHES entry of this card
    result["launches"] = launches_used(DEV)  # what the rows below were measured with
    log("launches:", json.dumps(result["launches"]))
    save()

    rows = []
    exact = {}
    for recipe in RECIPE_NAMES:
        c = Case(recipe, MAIN_TOKENS, seed=2)
        # the measured kernels' bytes against the CPU oracle, on the first 2048 tokens of the input
        import nvfp4_kvcache as ri

        q = nvfp4_kvcache_triton.quantize(c.k[:2048], recipe, global_scale=c.g)
        r = ri.quantize(c.k[:2048].cpu(), recipe, global_scale=None if c.g is None else c.g.cpu())
        exact[recipe] = bool(torch.equal(q.packed.cpu(), r.packed) and torch.equal(q.scales.cpu(), r.scales))
        for op, (fn, b) in c.ops().items():
            us = median_us(fn)
            # CUDA-graph replays: the GPU's own time, without the host's per-call work (argument
            # checks, Triton's launcher), which plain launches can add when the GPU waits for it
            gus = graph_us(fn)
            rows.append({"op": op, "recipe": recipe, "impl": "triton", "tokens": MAIN_TOKENS, "heads": H,
                         "head_dim": D, "dtype": "bfloat16", "us": us, "bytes": b, "gbps": b / us / 1e3,
                         "frac_of_copy": b / us / 1e3 / copy_gbps, "us_graph": gus,
                         "frac_of_copy_graph": b / gus / 1e3 / copy_gbps})
            log(f"{recipe:15s} {op:18s} {us:8.1f} us {b / us / 1e3:7.0f} GB/s {b / us / 1e3 / copy_gbps:6.1%} of copy"
                f" (graph {gus:8.1f} us, {b / gus / 1e3 / copy_gbps:6.1%})")
        del c
    result["main"] = rows
    result["bit_exact_vs_cpu_oracle_first_2048_tokens"] = exact
    log("bit-exact vs CPU oracle:", exact)
    save()

    up = {}
    if not args.no_upstream:
        try:
            up_rows, up = upstream_rows(copy_gbps)
            result["upstream"] = up_rows
            result["upstream_check"] = up
        except Exception as e:  # noqa: BLE001 - keep our numbers; say why upstream is missing
            result["upstream"] = []
            result["upstream_error"] = f"{type(e).__name__}: {e}"
            log("upstream failed:", result["upstream_error"])
        save()

    sweep = []
    for recipe in ("nvfp4", "fp4_mx_block16"):
        for t in SWEEP_TOKENS:
            c = Case(recipe, t, seed=3)
            for op, (fn, b) in c.ops().items():
                us = median_us(fn)
                gus = graph_us(fn)
                sweep.append({"op": op, "recipe": recipe, "tokens": t, "us": us, "us_graph": gus, "bytes": b,
                              "gbps": b / us / 1e3, "gbps_graph": b / gus / 1e3})
            del c
        log(f"sweep {recipe} done")
    result["sweep"] = sweep

    def pick(op, recipe, impl="triton"):
        src = result["main"] if impl == "triton" else result.get("upstream", [])
        return next((r for r in src if r["op"] == op and r["recipe"] == recipe), None)

    up_q = pick("quantize", "fp4_mx_block16", "sglang")
    up_d = pick("dequantize", "fp4_mx_block16", "sglang")
    summary = {}
    for recipe in RECIPE_NAMES:
        q, s, d = pick("quantize", recipe), pick("store_kv", recipe), pick("dequantize", recipe)
        summary[recipe] = {
            "quantize_frac_of_copy": q["frac_of_copy"],
            "store_kv_frac_of_copy": s["frac_of_copy"],
            "dequantize_frac_of_copy": d["frac_of_copy"],
            "gather_dequantize_frac_of_copy": pick("gather_dequantize", recipe)["frac_of_copy"],
            **{f"{op}_frac_of_copy_graph": pick(op, recipe)["frac_of_copy_graph"]
               for op in ("quantize", "store_kv", "dequantize", "gather_dequantize")},
            "quantize_speedup_vs_upstream": (up_q["us"] / q["us"]) if up_q else None,
            "dequantize_speedup_vs_upstream": (up_d["us"] / d["us"]) if up_d else None,
        }
    summary["upstream_baseline"] = "SGLang 0.5.23 FP4MXBlock16KVQuantizeUtil (fp4_mx_block16) on the same input"
    result["summary"] = summary
    save()
    log(json.dumps(summary, indent=1))
    log("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
