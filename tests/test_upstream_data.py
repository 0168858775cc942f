"""The upstream record (docs/data/upstream/*.yaml) against its schema, its sources, itself, the
generated pages, and the released sglang wheel.

Each check is a function that returns a list of problems. The real data must give none; the
negative controls feed each check a deliberately broken copy and require it to complain, so a check
that silently stopped checking would fail here.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import re
import zipfile
from pathlib import Path

import jsonschema
import pytest

from functools import lru_cache

from _upstream import SGLANG_VERSION, sglang_wheel
from _upstream import sglang_source as _sglang_source

sglang_source = lru_cache(maxsize=None)(_sglang_source)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data" / "upstream"
SVG = ROOT / "docs" / "assets" / "history-timeline.svg"

_spec = importlib.util.spec_from_file_location("render_upstream", ROOT / "scripts" / "render_upstream.py")
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)

FILES = {"sources": "sources_file", "history": "history_file", "backends": "backends_file", "pitfalls": "pitfalls_file",
         "landscape": "landscape_file", "releases": "releases_file"}
PROJECT_OF_REPO = {"sglang": "SGLang", "vllm": "vLLM", "trtllm": "TensorRT-LLM", "flashinfer": "FlashInfer",
                   "modelopt": "ModelOpt"}
TODAY = "2026-11-25"  # the date this record was last checked; no upstream date may lie after it


@pytest.fixture(scope="module")
def data() -> dict:
    return render.load_data(DATA)


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads((DATA / "schema.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------ checks

def schema_problems(data: dict, schema: dict) -> list[str]:
    problems = []
    for name, key in FILES.items():
        validator = jsonschema.Draft202012Validator({"$ref": f"#/$defs/{key}", "$defs": schema["$defs"]})
        for err in validator.iter_errors(data[name]):
            problems.append(f"{name}.yaml {list(err.absolute_path)}: {err.message[:160]}")
    return problems


def source_problems(sources_file: dict) -> list[str]:
    """Ids well formed and unique; PR/issue numbers match their ids; one entry per thread."""
    problems, ids, threads = [], set(), set()
    repos = sources_file["repos"]
    for s in sources_file["sources"]:
        sid = s["id"]
        if sid in ids:
            problems.append(f"duplicate id {sid}")
        ids.add(sid)
        if s["type"] in ("pr", "issue"):
            m = re.fullmatch(r"([a-z-]+)#([0-9]+)", sid)
            if not m or m.group(1) not in repos or int(m.group(2)) != s.get("number"):
                problems.append(f"{sid}: id does not match repo short name and number {s.get('number')}")
                continue
            thread = (repos[m.group(1)], s["number"])
            if thread in threads:
                problems.append(f"{sid}: thread listed twice")
            threads.add(thread)
        elif s["type"] == "file":
            top = sid.removeprefix("wheel:").split("/", 1)[0]
            if not sid.startswith("wheel:") or top not in sources_file["wheel_packages"]:
                problems.append(f"{sid}: wheel file id must be wheel:<package folder>/<path>")
        elif s["type"] == "file_at_commit":
            m = re.fullmatch(r"file:([a-z-]+)@([0-9a-f]{8}):(.+)", sid)
            if not m or m.group(1) not in repos or not s["commit"].startswith(m.group(2)) or m.group(3) != s["path"]:
                problems.append(f"{sid}: id does not match repo, commit and path")
    return problems


def url_problems(data: dict) -> list[str]:
    """Every rendered link of a thread is https://github.com/OWNER/REPO/(pull|issues)/N."""
    src = render.Sources(data["sources"], data["releases"])
    problems = []
    for s in data["sources"]["sources"]:
        url = src.url(s["id"])
        if s["type"] in ("pr", "issue"):
            kind = "pull" if s["type"] == "pr" else "issues"
            if not re.fullmatch(rf"https://github\.com/[\w.-]+/[\w.-]+/{kind}/{s['number']}", url):
                problems.append(f"{s['id']}: bad url {url}")
        elif s["type"] == "file_at_commit" and not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+/blob/[0-9a-f]{40}/.+", url):
            problems.append(f"{s['id']}: bad url {url}")
    return problems


def all_refs(data: dict) -> list[tuple[str, str]]:
    """(where, ref) for every citation in history, backends and pitfalls, prose markers included."""
    out = []

    def prose(where, text):
        out.extend((where, m.group(1)) for m in render.REF_IN_PROSE.finditer(text))

    for e in data["history"]["entries"]:
        w = f"history {e['ref']}"
        out.append((w, e["ref"]))
        prose(w, e["summary"])
        if e["merged_before"]:
            out.append((w, e["merged_before"]["ref"]))
            prose(w, e["merged_before"]["note"])
        for p in e["review_points"]:
            out.extend((w, r) for r in p["refs"])
            prose(w, p["text"])
        for n in e["numbers"]:
            out.append((w, n["ref"]))
            prose(w, n["context"])
    for row in data["backends"]["rows"]:
        w = f"backends {row['id']}"
        out.extend((w, r) for r in row["refs"] + row["read"]["refs"])
        for cell in row["arch"].values():
            out.extend((w, r) for r in cell["refs"])
        prose(w, row["notes"])
    for row in data["backends"]["rows"]:
        out.extend((f"backends {row['id']}", e["thread"]) for e in row["evidence"] if "thread" in e)
    for section in data["landscape"]["sections"]:
        prose(f"landscape {section['id']}", section["intro"])
        for item in section["items"]:
            w = f"landscape {item['id']}"
            out.extend((w, r) for r in item["refs"])
            out.extend((w, e["thread"]) for e in item.get("evidence", []) if "thread" in e)
            prose(w, item["text"])
    for r in data["backends"]["sglang_config"]["rejected"]:
        out.append(("backends rejected", r["ref"]))
    for p in data["pitfalls"]["pitfalls"]:
        w = f"pitfall {p['id']}"
        out.extend((w, r) for r in p["refs"])
        prose(w, p["what_happened"])
        prose(w, p["lesson"])
    for name in render.PAGES:
        prose(f"template {name}", (render.TEMPLATES / f"{name}.md").read_text(encoding="utf-8"))
    return out


def reference_problems(data: dict) -> list[str]:
    known = {s["id"] for s in data["sources"]["sources"]}
    used = {ref for _, ref in all_refs(data)}
    # the renderer also cites wheel files for the facts of sglang_config; those count as used
    src = render.Sources(data["sources"], data["releases"])
    try:
        pages = "".join(render.render_all(data).values())
    except (KeyError, ValueError) as err:
        return [f"pages do not render: {err}"]
    used |= {ref for ref in known if f"[{src.label(ref)}]({src.url(ref)})" in pages}
    problems = [f"{where}: unknown source {ref}" for where, ref in all_refs(data) if ref not in known]
    problems += [f"source {ref} is never cited" for ref in sorted(known - used)]
    return problems


def cell_problems(backends: dict) -> list[str]:
    """Every row and every cell names at least one source; row ids unique."""
    problems, ids = [], set()
    for row in backends["rows"]:
        if row["id"] in ids:
            problems.append(f"duplicate row id {row['id']}")
        ids.add(row["id"])
        if not row.get("refs"):
            problems.append(f"{row['id']}: row without sources")
        if not row.get("read", {}).get("refs"):
            problems.append(f"{row['id']}: read cell without sources")
        for arch in backends["arch_columns"]:
            if not row.get("arch", {}).get(arch, {}).get("refs"):
                problems.append(f"{row['id']}: {arch} cell without sources")
    return problems


def history_problems(data: dict) -> list[str]:
    """Threads unique, cited, of the right project; dates well ordered and consistent with state."""
    repos = data["sources"]["repos"]
    by_id = {s["id"]: s for s in data["sources"]["sources"]}
    problems, seen = [], set()
    for e in data["history"]["entries"]:
        ref = e["ref"]
        if ref in seen:
            problems.append(f"{ref}: listed twice")
        seen.add(ref)
        short = ref.split("#")[0]
        if short not in repos or PROJECT_OF_REPO.get(short) != e["project"]:
            problems.append(f"{ref}: project {e['project']} does not match repository")
        src = by_id.get(ref)
        if src is None or src["type"] not in ("pr", "issue"):
            problems.append(f"{ref}: not a PR or issue of sources.yaml")
        elif src["type"] == "issue" and e["state"] == "merged":
            problems.append(f"{ref}: an issue cannot be merged")
        opened = e["opened"]
        if opened and e.get("first_seen"):
            problems.append(f"{ref}: first_seen is only for entries without an opening date")
        start = opened or e.get("first_seen")
        if not start:
            problems.append(f"{ref}: neither opening date nor first activity")
        if e["state"] != "merged" and (e["merged"] or e["merged_before"]):
            problems.append(f"{ref}: merge data on a {e['state']} thread")
        for label, date in (("merged", e["merged"]),
                            ("merged_before", (e["merged_before"] or {}).get("date"))):
            if date and start and date < start:
                problems.append(f"{ref}: {label} {date} before opened {start}")
        for date in (opened, e.get("first_seen"), e["merged"], (e["merged_before"] or {}).get("date")):
            if date and date > TODAY:
                problems.append(f"{ref}: date {date} is in the future")
        if e["merged_before"] and e["merged_before"]["ref"] == ref:
            problems.append(f"{ref}: a merge bound must come from another thread")
    return problems


def prose_problems(data: dict) -> list[str]:
    """No bare '#123' in prose: every thread mention must be a {short#n} citation."""
    problems = []
    texts = []
    for e in data["history"]["entries"]:
        texts += [e["summary"]] + [p["text"] for p in e["review_points"]] + [n["context"] for n in e["numbers"]]
        if e["merged_before"]:
            texts.append(e["merged_before"]["note"])
    texts += [r["notes"] for r in data["backends"]["rows"]]
    texts += [p["what_happened"] for p in data["pitfalls"]["pitfalls"]] + [p["lesson"] for p in data["pitfalls"]["pitfalls"]]
    texts += [(render.TEMPLATES / f"{name}.md").read_text(encoding="utf-8") for name in render.PAGES]
    for text in texts:
        match = render.BARE_NUMBER.search(render.REF_IN_PROSE.sub("", text))
        if match:
            problems.append(f"bare thread number {match.group()} in: {text[:60]!r}")
    return problems


def page_problems(data: dict) -> list[str]:
    pages = render.render_all(data)
    problems = []
    for name, text in pages.items():
        path = ROOT / "docs" / f"{name}.md"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            problems.append(f"docs/{name}.md differs from what scripts/render_upstream.py produces now")
    return problems


# ------------------------------------------------------------------------------------ the real data

def test_schema(data, schema):
    assert schema_problems(data, schema) == []


def test_sources_well_formed_and_unique(data):
    assert source_problems(data["sources"]) == []
    assert url_problems(data) == []


def test_every_citation_resolves_and_every_source_is_cited(data):
    assert reference_problems(data) == []


def test_every_row_and_cell_has_a_source(data):
    assert cell_problems(data["backends"]) == []


def test_history_threads_and_dates(data):
    assert history_problems(data) == []


def test_prose_cites_instead_of_bare_numbers(data):
    assert prose_problems(data) == []


def test_pages_regenerate_identically(data):
    assert page_problems(data) == [], "run: python scripts/render_upstream.py"


def test_rendering_is_deterministic(data):
    assert render.render_all(copy.deepcopy(data)) == render.render_all(copy.deepcopy(data))


def test_pages_flag_unverified_items(data):
    pages = render.render_all(data)
    for row in data["backends"]["rows"]:
        if not row["verified"]:
            anchor = f'<a id="r-{row["id"]}"></a>'
            note = pages["backends"].split(anchor, 1)[1].split("\n", 1)[0]
            assert "**Unverified.**" in note, row["id"]
    for p in data["pitfalls"]["pitfalls"]:
        if not p["verified"]:
            assert f'[{p["title"]}](#{p["id"]}) *(unverified)*' in pages["pitfalls"]
    for s in data["sources"]["sources"]:
        if not s["verified"]:
            assert f"{s['checked']} (**unverified**)" in "".join(pages.values())
    for e in data["history"]["entries"]:
        if not e["verified"]:
            assert f"(#{e['ref'].replace('#', '-')}) *(unverified)*" in pages["history"]
            assert '!!! note "Unverified"' in pages["history"]


def test_timeline_figure_lists_every_dated_entry(data):
    svg = SVG.read_text(encoding="utf-8")
    assert "<svg" in svg
    for e in data["history"]["entries"]:
        if e["opened"] or e.get("first_seen"):
            assert f">#{e['ref'].split('#')[1]}<" in svg, f"{e['ref']} missing from {SVG.name}; run --svg"


# ------------------------------------------------------------------------------------ negative controls

def test_negative_controls(data, schema):
    bad = copy.deepcopy(data)
    bad["backends"]["rows"][0]["arch"]["sm90"]["refs"] = []
    assert schema_problems(bad, schema) and cell_problems(bad["backends"])

    bad = copy.deepcopy(data)
    bad["sources"]["sources"].append(dict(bad["sources"]["sources"][0]))
    assert source_problems(bad["sources"])
    bad = copy.deepcopy(data)
    bad["sources"]["sources"][0]["number"] += 1
    assert source_problems(bad["sources"])

    bad = copy.deepcopy(data)
    bad["history"]["entries"][0]["merged"] = "2020-01-01"
    assert history_problems(bad)
    bad = copy.deepcopy(data)
    bad["history"]["entries"].append(copy.deepcopy(bad["history"]["entries"][0]))
    assert history_problems(bad)

    bad = copy.deepcopy(data)
    bad["pitfalls"]["pitfalls"][0]["refs"].append("sglang#1")
    assert reference_problems(bad)
    bad = copy.deepcopy(data)
    bad["pitfalls"]["pitfalls"][0]["lesson"] += " See #12345."
    assert prose_problems(bad)

    bad = copy.deepcopy(data)
    bad["backends"]["rows"][0]["notes"] += " Edited."
    assert page_problems(bad)


# ------------------------------------------------------------------------------------ the sglang wheel

def _tree(relpath: str) -> ast.Module:
    return ast.parse(sglang_source(relpath))


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise AssertionError(f"function {name} not found")


def _eval_set(node: ast.expr, env: dict[str, frozenset]) -> frozenset:
    """frozenset({...}) literals, names bound to them, and their unions."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "frozenset":
        return frozenset(ast.literal_eval(node.args[0]))
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _eval_set(node.left, env) | _eval_set(node.right, env)
    raise AssertionError(f"unexpected expression {ast.dump(node)[:80]}")


@pytest.fixture(scope="module")
def cfg(data) -> dict:
    assert data["backends"]["sglang_release"] == SGLANG_VERSION
    return data["backends"]["sglang_config"]


def test_wheel_files_cited_exist(data):
    names = set(zipfile.ZipFile(sglang_wheel()).namelist())
    for s in data["sources"]["sources"]:
        if s["type"] == "file" and s["id"].startswith("wheel:sglang/"):
            assert s["id"].removeprefix("wheel:") in names, s["id"]
    # files of the other wheels are checked by tests/test_upstream_evidence.py (recorded evidence)


def _choices(relpath: str, field: str) -> list[str] | None:
    for node in ast.walk(_tree(relpath)):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == field:
            for kw in ast.walk(node):
                if isinstance(kw, ast.keyword) and kw.arg == "choices":
                    return ast.literal_eval(kw.value)
    return None


def test_wheel_kv_cache_dtype_choices(cfg):
    choices = _choices("sglang/srt/arg_groups/fields/model.py", "kv_cache_dtype")
    assert choices == cfg["kv_cache_dtype_choices"]
    assert set(cfg["fp4_dtypes"]) <= set(choices)
    for rejected in ("fp4_e2m1", "mxfp4"):
        assert rejected not in choices


def test_wheel_nvfp4_prefill_dequant_dtype(cfg):
    choices = _choices("sglang/srt/arg_groups/fields/exec_.py", "prefill_kv_cache_dequant_dtype")
    assert choices == cfg["prefill_kv_cache_dequant_dtype_choices"]
    tree = _tree("sglang/srt/arg_groups/kv_cache_hook.py")
    mapping = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                   and getattr(n.targets[0], "id", None) == "_NVFP4_PREFILL_BACKEND")
    assert mapping == cfg["nvfp4_prefill_backend"]


def test_wheel_error_texts(cfg):
    for r in cfg["rejected"]:
        assert r["error_quote"] in sglang_source(r["ref"].removeprefix("wheel:")), r["value"]
    # the old flag value is rejected only as "unknown", nothing in the FP4 code mentions it any more
    for path in ("sglang/srt/mem_cache/kv_cache_dtype.py", "sglang/srt/arg_groups/kv_cache_hook.py",
                 "sglang/srt/layers/quantization/fp4_kv_cache_quant_method.py"):
        assert '"fp4_e2m1"' not in sglang_source(path)


def test_wheel_kv4_allow_lists(cfg):
    func = _function(_tree("sglang/srt/arg_groups/kv_cache_hook.py"), "handle_kv4_compatibility")
    found = {}
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id.startswith("KV4_"):
                found[node.targets[0].id] = ast.literal_eval(node.value)
    assert found == cfg["kv4_allow_lists"]


def test_wheel_access_registry(cfg):
    tree = _tree("sglang/srt/layers/quantization/fp4_kv_cache_quant_method.py")
    env: dict[str, frozenset] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.endswith("_BACKENDS"):
                env[name] = _eval_set(node.value, env)
    for name, backends in cfg["access_registry"].items():
        assert env[name] == frozenset(backends), name


def test_wheel_trtllm_mla_refuses_fp4(cfg):
    func = _function(_tree("sglang/srt/arg_groups/overrides.py"), "_mla_kv_cache_dtype_checks")
    lists = [ast.literal_eval(n.comparators[0]) for n in ast.walk(func)
             if isinstance(n, ast.Compare) and isinstance(n.ops[0], ast.NotIn)
             and isinstance(n.comparators[0], ast.List)]
    assert lists == [cfg["trtllm_mla_kv_dtypes"]]
    assert not set(cfg["fp4_dtypes"]) & set(cfg["trtllm_mla_kv_dtypes"])


def test_wheel_arch_predicates(cfg):
    tree = _tree("sglang/srt/utils/common.py")
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            for kw in ast.walk(node.value):
                if isinstance(kw, ast.keyword) and kw.arg == "device_capability_majors":
                    found[node.targets[0].id] = ast.literal_eval(kw.value)
    for name, majors in cfg["arch_predicates"].items():
        assert found[name] == majors, name


def test_wheel_classes_present_and_old_names_gone(cfg):
    for c in cfg["classes"]:
        names = {n.name for n in ast.walk(_tree(c["file"])) if isinstance(n, ast.ClassDef)}
        assert c["name"] in names, c
    old = re.compile(rb"\b(" + b"|".join(n.encode() for n in cfg["removed_names"]) + rb")\b")
    with zipfile.ZipFile(sglang_wheel()) as wheel:
        for path in wheel.namelist():
            if path.startswith("sglang/") and path.endswith(".py"):
                data = wheel.read(path)
                if b"QuantizeUtil" in data:  # cheap filter before the exact pattern
                    assert not old.search(data), f"{old.search(data).group().decode()} still in {path}"


def test_wheel_pool_buffer_shapes(cfg):
    def squash(text: str) -> str:
        return re.sub(r",\)", ")", re.sub(r"\s+", "", text))

    sources = {}
    for c in cfg["classes"]:
        text = sglang_source(c["file"])
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.name == c["name"]:
                sources[c["name"]] = squash(ast.get_source_segment(text, node))
    for buf in cfg["pool_buffers"]:
        assert squash(buf["shape"]) in sources[buf["class"]], buf


def test_wheel_mla_fp4_pool_uses_block16_quantizer():
    text = sglang_source("sglang/srt/mem_cache/memory_pool.py")
    tree = ast.parse(text)
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "MLATokenToKVPoolFP4")
    body = ast.get_source_segment(text, cls)
    assert "FP4MXBlock16KVQuantizeUtil.batched_quantize" in body
    assert "FP4MXBlock16KVQuantizeUtil.batched_dequantize" in body
    assert "NVFP4" not in body


def test_wheel_block16_mha_reads_dequantize_the_whole_layer():
    """The PLAIN read of the MHA pool dequantizes the layer's full buffer, not the requested slots."""
    text = sglang_source("sglang/srt/mem_cache/memory_pool.py")
    tree = ast.parse(text)
    pool = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MHATokenToKVPool")
    for name, buf in (("_get_key_buffer", "k"), ("_get_value_buffer", "v")):
        func = next(n for n in pool.body if isinstance(n, ast.FunctionDef) and n.name == name)
        body = re.sub(r"\s+", "", ast.get_source_segment(text, func))
        assert (f"dequantize_kv_tensor(self.{buf}_buffer[local_layer_id],"
                f"self.{buf}_scale_buffer[local_layer_id],") in body, name
    quant = sglang_source("sglang/srt/layers/quantization/fp4_kv_cache_quant_method.py")
    assert "_plain(_DECODE, _FP4_MX_MHA_BACKENDS, _FP4_MX_SCALE, _BF16)" in quant


def _squashed(relpath: str) -> str:
    return re.sub(r"\s+", "", sglang_source(relpath))


def test_wheel_sm100_multiplies_checkpoint_kv_scales_by_six():
    """Pitfall global-scale-6x: x6 only on SM100-class parts and only for scales other than 1.0."""
    text = _squashed("sglang/srt/layers/quantization/fp4_kv_cache_quant_method.py")
    assert "ifget_platform().is_sm100andk_scale!=1.0:k_scale*=E2M1_MAX" in text
    assert "ifget_platform().is_sm100andv_scale!=1.0:v_scale*=E2M1_MAX" in text
    assert "amax/(6*448)" in text and "amax/448" in text


def test_wheel_host_offload_refuses_every_fp4_layout():
    """Pitfall host-offload-scales: the host pools refuse FP4 caches of either recipe, and the
    SM100 native NVFP4 route is refused up front with HiCache, LMCache and PD disaggregation."""
    source = sglang_source("sglang/srt/arg_groups/kv_cache_hook.py")
    func = _function(ast.parse(source), "handle_kv4_compatibility")
    text = re.sub(r"\s+", "", ast.get_source_segment(source, func))
    assert "ifuses_sm100_trtllm_nvfp4and(cfg.enable_hierarchical_cacheorcfg.enable_lmcache):" in text
    assert "ifuses_sm100_trtllm_nvfp4andcfg.disaggregation_mode!=\"null\":" in text
    mha_host = _squashed("sglang/srt/mem_cache/pool_host/mha.py")
    assert "if(info.scalesisnotNoneandinfo.scales.layout!=KVScaleLayout.MXFP8_INTERLEAVED):raiseValueError(" in mha_host
    # the FP4 MHA pool (MHATokenToKVPool with scale buffers) reports the per-token layout
    pool = sglang_source("sglang/srt/mem_cache/memory_pool.py")
    tree = ast.parse(pool)
    base = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MHATokenToKVPool")
    scales = next(n for n in base.body if isinstance(n, ast.FunctionDef) and n.name == "_mha_scale_buffers")
    assert "layout=KVScaleLayout.TOKEN" in re.sub(r"\s+", "", ast.get_source_segment(pool, scales))
    fp4 = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MHATokenToKVPoolFP4")
    assert "_mha_scale_buffers" not in {n.name for n in fp4.body if isinstance(n, ast.FunctionDef)}
    mla_host = _squashed("sglang/srt/mem_cache/pool_host/mla.py")
    assert "ifinfo.scalesisnotNone:" in mla_host and "doesnotsupport{role}FP4KV" in mla_host


def test_wheel_mla_fp4_pool_chosen_by_storage_dtype():
    """Pitfall nvfp4-mla-pool: the MLA FP4 pool is picked by torch dtype, not by recipe name."""
    text = _squashed("sglang/srt/mem_cache/kv_cache_configurator.py")
    assert "ifis_float4_e2m1fn_x2(self.kv_cache_dtype):token_to_kv_pool=self._build_mla_fp4_kv_pool(" in text


def test_matrix_agrees_with_wheel(data, cfg):
    """SGLang rows: supported exactly where the wheel's allow-lists and registry say so."""
    lists, reg = cfg["kv4_allow_lists"], cfg["access_registry"]
    for row in data["backends"]["rows"]:
        if row["system"] != "SGLang" or " " in row["backend"].replace(" (MLA)", ""):
            continue  # rows naming several backends are checked by the lists themselves
        backend = row["backend"].replace(" (MLA)", "")
        read = row["read"]["value"]
        if row["recipe"] == "fp4_mx_block16" and row["attention"] == "MHA":
            allowed = (backend in lists["KV4_ATTENTION_MHA_BACKEND_CHOICES"]
                       and backend in reg["_FP4_MX_MHA_BACKENDS"])
            if row["phases"] == ["prefill"]:
                allowed = backend in reg["_FP4_MX_PREFILL_BACKENDS"]
            assert (read == "dequant_bf16") == allowed, row["id"]
        elif row["recipe"] == "fp4_mx_block16" and row["attention"] == "MLA":
            allowed = (backend in lists["KV4_ATTENTION_MLA_BACKEND_CHOICES"] + lists["KV4_FA4_MLA_BACKEND_CHOICES"]
                       or (backend == "fa4" and row["phases"] == ["prefill"]))
            if backend == "trtllm_mla":
                allowed = allowed and bool(set(cfg["fp4_dtypes"]) & set(cfg["trtllm_mla_kv_dtypes"]))
            assert (read == "dequant_bf16") == allowed, row["id"]
        elif row["recipe"] == "nvfp4" and row["attention"] == "MHA":
            if read == "native_fp4":
                key = "_NVFP4_KV_PREFILL_BACKENDS" if row["phases"] == ["prefill"] else "_NVFP4_KV_DECODE_BACKENDS"
                assert backend in reg[key], row["id"]
            elif read == "dequant_fp8_workspace":
                assert backend in reg["_NVFP4_DQ_KV_PREFILL_BACKENDS"], row["id"]
        # nvfp4 is refused below SM100 by handle_kv4_compatibility
        if row["recipe"] == "nvfp4":
            assert row["arch"]["sm80"]["value"] == row["arch"]["sm90"]["value"] == "no", row["id"]


# ------------------------------------------------------------------------------------ the wheel, executed

@pytest.fixture(scope="module")
def quant_method_module():
    """Upstream fp4_kv_cache_quant_method.py, run on CPU with its two SGLang imports stubbed."""
    from types import SimpleNamespace

    from _upstream import load_sglang_module

    platform = SimpleNamespace(is_sm90=False, is_sm100=False, is_sm120=False, is_cuda=True)
    return load_sglang_module(
        "sglang/srt/layers/quantization/fp4_kv_cache_quant_method.py",
        stubs={"sglang.srt.runtime_context": {"get_platform": lambda: platform},
               "sglang.srt.layers.quantization.kvfp4_tensor": {"E2M1_MAX": 6.0}},
    )


def test_executed_recipe_resolution(quant_method_module, cfg):
    resolve = quant_method_module.resolve_kv_cache_quant
    for dtype in cfg["fp4_dtypes"]:
        assert resolve(dtype) == dtype
    mxfp4 = next(r for r in cfg["rejected"] if r["value"] == "mxfp4")
    with pytest.raises(ValueError, match=re.escape(mxfp4["error_quote"].strip())):
        resolve("mxfp4")
    assert resolve("fp4_e2m1") is None  # not a recipe any more: nothing resolves it


def test_executed_buffer_shapes(quant_method_module, cfg):
    """Allocate the method buffers on CPU and compare with the shapes recorded in the data."""
    import torch
    from types import SimpleNamespace

    m, n, k, layers, page = 64, 8, 128, 2, 16
    methods = {
        "NVFP4KVCacheMethod": quant_method_module.NVFP4KVCacheMethod(
            num_layers=layers, device="cpu", page_size=page, native_scale_layout=True),
        "FP4MXBlock16KVCacheMethod": quant_method_module.FP4MXBlock16KVCacheMethod(),
    }
    checked = 0
    for entry in cfg["pool_buffers"]:
        method = methods.get(entry["class"])
        if method is None:
            continue  # pool classes need the whole of SGLang; their shapes are checked as source text
        buffers = method.create_buffers(m, n, k, layers, "cpu")
        env = {"m": m, "n": n, "k": k, "self": SimpleNamespace(page_size=page, SCALE_BLOCK_SIZE=16)}
        expected = eval(entry["shape"], {}, env)  # noqa: S307 - a shape expression from our own data
        for name in (entry["buffer"].split(" (")[0]).split(" / "):
            got = buffers[name]
            got = got[0] if isinstance(got, list) else got
            assert tuple(got.shape) == expected, (entry, name)
            if entry["dtype"] == "uint8":
                assert got.dtype == torch.uint8, name
            checked += 1
    assert checked >= 6
    mx = methods["FP4MXBlock16KVCacheMethod"].create_buffers(m, n, k, layers, "cpu")
    assert mx["dq_k_buffer"] is None  # the block-16 recipe has no workspace: reads dequantize to BF16
    nv = methods["NVFP4KVCacheMethod"].create_buffers(m, n, k, layers, "cpu")
    assert nv["dq_k_buffer"].dtype == torch.float8_e4m3fn and not isinstance(nv["dq_k_buffer"], list)


def registry_problems(module, data: dict) -> list[str]:
    """SGLang MHA rows whose read mode differs from what the upstream access registry declares."""
    import torch

    kinds = {"plain": "dequant_bf16", "dequant_workspace": "dequant_fp8_workspace", "native_fp4": "native_fp4"}
    registry = module.KV_CACHE_ATTENTION_ACCESS_REGISTRY

    def declared(recipe: str, phase: str, backend: str) -> set[str]:
        out = set()
        for rule in registry[recipe]:
            if rule.phase.value == phase and backend in rule.backend_matcher.exact:
                if rule.kind.value == "plain" and rule.attention_kv_dtype != torch.bfloat16:
                    out.add("plain read in another dtype")
                out.add(kinds[rule.kind.value])
        return out

    problems, checked = [], 0
    for row in data["backends"]["rows"]:
        if row["system"] != "SGLang" or row["attention"] != "MHA" or row["status"] != "shipped":
            continue
        backends = [b.strip() for b in row["backend"].split(",") if b.strip() != "others"]
        if any(" " in b for b in backends):
            continue  # "any other decode backend": covered by the allow-list tests
        for backend in backends:
            for phase in row["phases"]:
                modes = declared(row["recipe"], phase, backend)
                checked += 1
                if row["read"]["value"] == "not_supported" and modes:
                    problems.append(f"{row['id']}: upstream declares {modes} for {backend} {phase}")
                elif row["read"]["value"] != "not_supported" and row["read"]["value"] not in modes:
                    problems.append(f"{row['id']}: {row['read']['value']} not declared for {backend} {phase} ({modes})")
    if checked < 10:
        problems.append(f"only {checked} backend/phase pairs checked")
    return problems


def test_executed_access_registry_matches_matrix(quant_method_module, data):
    assert registry_problems(quant_method_module, data) == []
    bad = copy.deepcopy(data)
    next(r for r in bad["backends"]["rows"] if r["id"] == "sglang-mx-mha-triton")["read"]["value"] = "native_fp4"
    assert registry_problems(quant_method_module, bad)
    bad = copy.deepcopy(data)
    next(r for r in bad["backends"]["rows"] if r["id"] == "sglang-mx-mha-unsupported")["backend"] = "triton"
    assert registry_problems(quant_method_module, bad)
