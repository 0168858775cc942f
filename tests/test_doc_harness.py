"""The docs harness itself: every fence variant is collected, failures surface, the audit bites."""

import json
import textwrap
from pathlib import Path

import pytest
from sybil import Sybil

from doc_blocks import GPU_SKIP_REASON, FenceParser, is_gpu_example

ROOT = Path(__file__).resolve().parents[1]

PAGE = textwrap.dedent('''\
    # page

    ```python
    a = 1
    ```

    ```Python
    a += 1
    ```

    ```py title="example.py"
    a += 1
    ```

    !!! note
        ```python
        a += 1
        ```

    ```{.python .gpu}
    import torch; torch.cuda.synchronize()
    ```

    ```pycon
    >>> a
    4
    ```

    ```text
    not run
    ```

    ```bash
    echo not python
    ```
    ''')


def _parse(tmp_path, text):
    path = tmp_path / "page.md"
    path.write_text(text)
    return Sybil(parsers=[FenceParser()]).parse(path)


def test_every_python_fence_variant_is_collected(tmp_path):
    examples = list(_parse(tmp_path, PAGE))
    assert len(examples) == 6  # four plain fences, one gpu fence, one pycon statement
    assert [is_gpu_example(e) for e in examples] == [False, False, False, False, True, False]


def test_blocks_share_one_namespace_in_page_order(tmp_path):
    examples = [e for e in _parse(tmp_path, PAGE) if not is_gpu_example(e)]
    for e in examples:
        e.evaluate()
    assert examples[0].namespace["a"] == 4


def test_the_broken_page_fails():
    examples = list(Sybil(parsers=[FenceParser()]).parse(ROOT / "tests" / "fixtures" / "broken_page.md"))
    assert len(examples) == 2
    examples[0].evaluate()
    with pytest.raises(AssertionError, match="deliberate failure"):
        examples[1].evaluate()


SITE_HTML = """
<div class="language-python highlight"><pre><code>x = 1
</code></pre></div>
<div class="language-pycon highlight"><pre><code>&gt;&gt;&gt; x + 1
2
</code></pre></div>
<div class="language-python doc-signature highlight"><pre><code>f(x) -&gt; int</code></pre></div>
<details class="mkdocstrings-source"><summary>Source</summary>
<div class="language-python highlight"><pre><code>def f(x): return x</code></pre></div></details>
<div class="language-Python highlight"><pre><code>y = 2</code></pre></div>
<div class="language-text highlight"><pre><code>not python</code></pre></div>
"""


def _audit(tmp_path, report):
    from audit_doc_blocks import audit

    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "index.html").write_text(SITE_HTML)
    return audit(site, report)


def test_audit_flags_a_block_that_did_not_run(tmp_path):
    report = {"a": {"outcome": "passed", "reason": "", "source": "x = 1\n"},
              "b": {"outcome": "passed", "reason": "", "source": "x + 1\n"}}
    problems, counts = _audit(tmp_path, report)
    assert counts["rendered"] == 3  # signature and shown source are not examples
    assert problems == ["NOT RUN   index.html: 'y = 2'"]


def test_audit_passes_when_all_ran_and_allows_only_the_gpu_skip(tmp_path):
    report = {"a": {"outcome": "passed", "reason": "", "source": "x = 1"},
              "b": {"outcome": "passed", "reason": "", "source": "x + 1"},
              "c": {"outcome": "skipped", "reason": GPU_SKIP_REASON, "source": "y = 2"}}
    assert _audit(tmp_path, report) == ([], {"rendered": 3, "passed": 2, "skipped": 1})
    report["c"]["reason"] = "flaky"
    problems, _ = _audit(tmp_path, report)
    assert len(problems) == 1 and problems[0].startswith("SKIPPED")
    report["c"]["outcome"] = "failed"
    problems, _ = _audit(tmp_path, report)
    assert problems[0].startswith("FAILED")


def test_audit_fails_on_an_empty_site(tmp_path):
    from audit_doc_blocks import audit

    (tmp_path / "empty").mkdir()
    problems, counts = audit(tmp_path / "empty", {})
    assert counts["rendered"] == 0 and problems


# ------------------------------------------------------------------ printed output (#> lines)

OUTPUT_PAGE = textwrap.dedent('''\
    # page

    ```python
    def shout(word):
        print(word.upper())


    print("a", 1)
    #> a 1
    for i in range(2):
        print(i)
        #> 0
        #> 1
    shout("b")
    #> B
    ```

    !!! note
        ```python
        print(
            "multi-line call",
        )
        #> multi-line call
        ```
    ''')


def _evaluate_all(tmp_path, text):
    examples = list(_parse(tmp_path, text))
    for e in examples:
        e.evaluate()
    return examples


def test_printed_output_equal_to_the_output_lines_passes(tmp_path):
    _evaluate_all(tmp_path, OUTPUT_PAGE)


@pytest.mark.parametrize("old, new", [
    ("#> a 1\n", "#> a 2\n"),          # wrong value
    ("#> a 1\n", ""),                  # output not shown
    ("    #> 1\n", ""),                # one loop iteration missing
    ("#> B\n", "#> b\n"),              # output of a call into other code
    ("print(i)\n", "i\n"),             # shown output that nothing prints
])
def test_printed_output_that_differs_fails(tmp_path, old, new):
    assert old in OUTPUT_PAGE
    with pytest.raises(AssertionError, match="printed output differs"):
        _evaluate_all(tmp_path, OUTPUT_PAGE.replace(old, new, 1))


def test_update_mode_rewrites_the_output_lines_in_place(tmp_path, monkeypatch):
    from doc_blocks import UPDATE_ENV, write_pending_updates

    stale = OUTPUT_PAGE.replace("#> a 1\n", "").replace("    #> multi-line call\n", "    #> stale\n")
    monkeypatch.setenv(UPDATE_ENV, "1")
    _evaluate_all(tmp_path, stale)
    assert write_pending_updates() == [str(tmp_path / "page.md")]
    assert (tmp_path / "page.md").read_text() == OUTPUT_PAGE     # indented block kept its indent
    monkeypatch.delenv(UPDATE_ENV)
    _evaluate_all(tmp_path, OUTPUT_PAGE)
