"""Every abbreviation and piece of jargon the site uses has a glossary entry and a hover definition.

Abbreviation-like tokens are read from every built page's prose (code, the headings that name
API objects, and link targets left out): words of two or more capitals and digits (`KV`, `FP4`,
`SM120`, `E4M3`, plural `GPUs` too) and the mixed-case or lower-case jargon in `JARGON`. Each
needs a term in `docs/glossary.md` and a line in `docs/includes/abbreviations.md` (the hover
text, appended to every page). Proper names and units are not abbreviations to define; they are
listed in `NAMES`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from _site import ROOT, article, built_site, prose_text, site_pages

GLOSSARY = ROOT / "docs" / "glossary.md"
ABBREVIATIONS = ROOT / "docs" / "includes" / "abbreviations.md"

JARGON = ["NoPE", "RoPE", "GenMHA", "HiCache", "split-KV", "ulp", "binade", "NaN", "Inf", "MoE", "amax",
          "trtllm-gen", "wgmma"]
"""Jargon that the capitals rule cannot see (mixed or lower case), matched as whole words."""

NAMES = {
    # companies, products, libraries, processors, models, data sets and benchmarks: names, not abbreviations
    "NVIDIA", "AMD", "EPYC", "RTX", "PRO", "SXM", "GLM", "GPT", "BERT", "KIVI", "LLVM", "EAGLE", "EAGLE3", "NEXTN",
    "NGRAM", "GSM8K", "GPQA", "MMLU", "MRCR", "AIME25", "README", "TODO", "WIP",
    # units
    "GB", "TB", "MB", "KB", "GiB", "MiB", "KiB", "GHz", "MHz",
    "DGX", "M3", "GGML", "CUTLASS",
}
_NAME_PATTERNS = re.compile(r"^(?:[ABHL]|GB)\d{2,4}$")     # GPU models: A100, H100, H200, B200, GB10

_CAPS = re.compile(r"(?<![\w/#.%-])([A-Z][A-Z0-9]*[A-Z][A-Z0-9]*|[A-Z][A-Z0-9]*[0-9][A-Z0-9]*)(s?)(?![\w])")
_API_NAME = re.compile(r'<h[1-6][^>]*class="doc doc-heading[^"]*"[^>]*>.*?</h[1-6]>', re.S)
_SM = re.compile(r"^SM\d+x?$")


def _key(token: str) -> str:
    """The glossary key a token falls under (`SM120` under `SM`)."""
    return "SM" if _SM.match(token) else token


def glossary_terms() -> dict[str, str]:
    """`{term: anchor}` for every glossary term; a line `E8M0, UE8M0 { #e8m0 }` gives two terms."""
    out = {}
    for line, anchor in re.findall(r"^(\S[^\n]*?)(?: \{ #([\w-]+) \})?\n:   ", GLOSSARY.read_text(), re.M):
        for term in line.split(", "):
            out[term.strip()] = anchor
    return out


def hover_terms() -> dict[str, str]:
    """`{abbreviation: hover text}` from the auto-appended abbreviations file."""
    return dict(re.findall(r"^\*\[([^\]]+)\]: (.+)$", ABBREVIATIONS.read_text(), re.M))


def tokens(text: str) -> set[str]:
    """Abbreviations and jargon in a page's prose (singular form, `SM120` kept as written)."""
    found = {m.group(1) for m in _CAPS.finditer(text)}
    found |= {j for j in JARGON if re.search(rf"(?<![\w-]){re.escape(j)}s?(?![\w-])", text)}
    return {t for t in found if t not in NAMES and not _NAME_PATTERNS.match(t)}


def page_tokens(html: str) -> set[str]:
    return tokens(prose_text(_API_NAME.sub("", article(html))))


# -- the detector -----------------------------------------------------------------------------------

def test_tokens_are_the_abbreviations_and_jargon():
    text = ("NVFP4 stores E4M3 scales per 16 values; GPUs (SM120, SM100) read FP4 from the KV cache with "
            "split-KV; RoPE and NoPE parts; off by one ulp, 2.6 binades. NVIDIA sells 80 GB H100 cards. "
            "A Sentence Starts Here.")
    assert tokens(text) == {"NVFP4", "E4M3", "GPU", "SM120", "SM100", "FP4", "KV", "split-KV", "RoPE", "NoPE", "ulp",
                            "binade"}


def test_code_and_api_headings_are_not_prose():
    html = ('<article><h2 id="x.TUNING" class="doc doc-heading">TUNING</h2><p>The <code>QKV_ONLY</code> flag '
            'and <a href="#SCHEMES">link text NVFP4</a>.</p><pre><code>XYZ = 1</code></pre></article>')
    assert page_tokens(html) == {"NVFP4"}


def test_glossary_terms_parse_with_their_anchors():
    terms = glossary_terms()
    assert terms["E8M0"] == terms["UE8M0"] == "e8m0"
    assert all(terms.values()), [t for t, a in terms.items() if not a]


# -- the site ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def used() -> dict[str, set[str]]:
    """`{token: pages}` for every abbreviation and jargon word on the built site."""
    out: dict[str, set[str]] = {}
    for page, html in site_pages(built_site()).items():
        for token in page_tokens(html):
            out.setdefault(token, set()).add(page)
    return out


def test_every_abbreviation_on_the_site_has_a_glossary_entry(used):
    terms = glossary_terms()
    missing = {t: sorted(p)[:3] for t, p in used.items() if _key(t) not in terms}
    assert not missing, f"add to docs/glossary.md: {missing}"


def test_every_abbreviation_on_the_site_has_a_hover_definition(used):
    hover = hover_terms()
    missing = {t: sorted(p)[:3] for t, p in used.items() if t not in hover}
    assert not missing, f"add to docs/includes/abbreviations.md: {missing}"


def test_every_hover_definition_is_a_glossary_term():
    terms = glossary_terms()
    stray = [h for h in hover_terms() if _key(h) not in terms]
    assert not stray, f"hover text without a glossary entry: {stray}"


def test_glossary_anchors_are_unique_and_linked_terms_exist():
    anchors = [a for a in dict.fromkeys(glossary_terms().values())]
    assert len(anchors) == len(set(anchors))
    links = {(p.relative_to(ROOT), a) for p in (ROOT / "docs").rglob("*.md")
             for a in re.findall(r"glossary\.md#([\w-]+)", p.read_text())}
    dangling = sorted(str(x) for x in links if x[1] not in anchors)
    assert not dangling, f"links to glossary anchors that do not exist: {dangling}"
