"""The project speaks of itself and its field only: no process talk, no machine paths.

Process talk is how the work was organised, which a reader cannot look up: our own issue
numbers ("issue 5"; upstream references carry their repository's `#`, as `sglang#1234` or
"PR #1234"), "session". Machine paths are the folders of the machines the work ran on
(`/work`, `/tmp`, `/root`, home folders): a data file's provenance records a command that
reproduces it, not where its output went (`scripts/provenance.py`).

Checked: every docs source (pages, data files, figures), the README, the code and scripts, and
every built page.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from _site import ROOT, article, built_site, site_pages

PROCESS = {
    "our issue number": re.compile(r"\b[Ii]ssues?\s+\d+"),
    "session": re.compile(r"\b[Ss]essions?\b"),
    "goals from an issue": re.compile(r"[Gg]oals\W+\(?[Ii]ssue"),
}
MACHINE_PATH = {
    "machine path": re.compile(r"(?<![\w.~-])/(?:work|tmp|root|home|Users|mnt/data)(?:/|\b)(?![\w-])"
                               r"|\b[A-Z]:\\\\Users\\\\"),
}
_TEXT = {".md", ".py", ".json", ".yml", ".yaml", ".toml", ".txt", ".csv", ".svg", ".css", ".js", ".html", ".sh",
         ".cfg", ".ini", ""}
_THIS = Path(__file__).resolve()


def problems(text: str, rules: dict[str, re.Pattern]) -> list[str]:
    out = []
    for name, rule in rules.items():
        for m in rule.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            out.append(f"line {line}: {name}: {text[max(0, m.start() - 30):m.end() + 30]!r}")
    return out


def _repo_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.split("\n")
        files = [ROOT / f for f in listed if f]
    except (OSError, subprocess.CalledProcessError):      # not a git checkout
        skip = {".git", ".venv", "build", ".cache", "__pycache__", "node_modules"}
        files = [p for p in ROOT.rglob("*") if not skip.intersection(p.relative_to(ROOT).parts)]
    vendor = ROOT / "docs" / "assets" / "vendor"
    return sorted(f for f in files if f.is_file() and f.suffix in _TEXT and f.resolve() != _THIS
                  and not f.is_relative_to(vendor))


def _is_docs(path: Path) -> bool:
    rel = path.relative_to(ROOT)
    return rel.parts[0] == "docs" or str(rel) == "README.md"


# -- the detectors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "Issue 5 set the goals a little below them.",
    "**Goals** (issue 4): quantize at 85% of the copy bandwidth.",
    "timed on another H100 of the same session.",
    "as issues 14 and 15 asked",
])
def test_process_talk_is_caught(text):
    assert problems(text, PROCESS)


@pytest.mark.parametrize("text", [
    "roadmap issue #29913 and PR #36121", "[sglang#1234](https://github.com/sgl-project/sglang/issues/1234)",
    "the instruction-issue limit: FP4 is issue-bound", "the goals (3x BF16, 1.7x FP8) are not met",
])
def test_upstream_references_and_plain_words_pass(text):
    assert problems(text, PROCESS) == []


@pytest.mark.parametrize("path", ["/" + "root/out/q.json", "/" + "tmp/d.json", "/" + "work/main/docs",
                                  "/" + "home/alice/x", "cd /" + "tmp && run"])
def test_machine_paths_are_caught(path):
    assert problems(f"python x.py --out {path}", MACHINE_PATH)


@pytest.mark.parametrize("text", ["build/smoke/decode_attention.json", "docs/data/perf/x.json",
                                  "https://github.com/x/y/tree/main/work/tmp", "sglang/srt/mem_cache/pool_host/mha.py",
                                  "a/tmp/b", "1/root/2", "~/.cache/nvfp4-kvcache"])
def test_repository_paths_and_urls_pass(text):
    assert problems(text, MACHINE_PATH) == []


# -- the sources ------------------------------------------------------------------------------------

def test_sources_have_no_process_talk_or_machine_paths():
    files = _repo_files()
    assert any(f.suffix == ".md" for f in files) and any(f.suffix == ".json" for f in files)
    found = {}
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        rules = {**MACHINE_PATH, **PROCESS} if _is_docs(f) else MACHINE_PATH
        if probs := problems(text, rules):
            found[str(f.relative_to(ROOT))] = probs[:5]
    assert not found, found


def test_data_provenance_is_published_without_the_output_path():
    from provenance import command_line

    cmd = command_line("bench_quant_kernels.py", ["--no-tune", "--out", "/" + "root/out/q.json", "--tokens", "4"])
    assert cmd == "python scripts/bench_quant_kernels.py --no-tune --tokens 4"
    assert command_line("x.py", [f"--json={ROOT / 'docs' / 'x.json'}", "/" + "tmp/in.json"]) == \
        "python scripts/x.py --json=docs/x.json in.json"
    writers = [p for p in (ROOT / "scripts").glob("*.py") if '"command":' in p.read_text()]   # record a command
    assert len(writers) >= 4, writers
    hand_made = [p.name for p in writers if "sys.argv" in p.read_text() and "command_line(" not in p.read_text()]
    assert not hand_made, f"record the command with provenance.command_line: {hand_made}"


# -- the built site ---------------------------------------------------------------------------------

def test_built_pages_have_no_process_talk_or_machine_paths():
    pages = site_pages(built_site())
    assert len(pages) >= 5
    tags = re.compile(r"<[^>]+>")
    found = {page: probs[:5] for page, html in pages.items()
             if (probs := problems(tags.sub(" ", article(html)), {**MACHINE_PATH, **PROCESS}))}
    assert not found, found
