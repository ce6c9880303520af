"""The HTML report: self-contained, a summary of each run first, runs side by side, every part
present or its command named, every figure shown at its natural size (or wider than 700 px) in a
real headless browser; and the text summary that ``bayesncl-report`` prints."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from bayesncl_pyro.cli.report import main as report_main
from bayesncl_pyro.evaluation.evaluate import FEATURE_SETS, evaluate_run
from bayesncl_pyro.evaluation.gate_posterior import inspect_run
from bayesncl_pyro.evaluation.glossary import TERMS
from bayesncl_pyro.evaluation.report import REPORT_FILE, load_artifacts, write_report
from bayesncl_pyro.storage.metrics_log import read_metrics
from tests.browser import IMAGES_STATE, open_file
from tests.conftest import tiny_run

VOID = {"meta", "img", "br", "hr", "link", "input"}


class _Page(HTMLParser):
    """Collects image sources and checks that every opened element is closed in order."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    assert page.stack == []
    return page


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    gated = tiny_run(tmp_path_factory, "gated")
    evaluate_run(gated, device="cpu", progress=False)
    inspect_run(gated, draws=20, chains=2, device="cpu", progress=False)
    ungated = tiny_run(tmp_path_factory, "ungated", "gate.prior=none")
    evaluate_run(ungated, device="cpu", progress=False)
    inspect_run(ungated, draws=2, chains=1, device="cpu", progress=False)
    return gated, ungated


def test_report_of_two_runs_is_self_contained_and_side_by_side(runs, tmp_path):
    gated, ungated = runs
    out = write_report([gated, ungated], tmp_path / "both.html")
    text = out.read_text()
    page = parse(text)
    assert not re.search(r"""(src|href)=['"](?!data:|#)""", text), "every resource must be embedded"
    assert "<link" not in text and "<script" not in text
    # best and worst dimensions of both runs, training curves, four gate figures of the gated run
    assert len(page.images) == 7
    for src in page.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        with Image.open(io.BytesIO(base64.b64decode(src[len(prefix):]))) as image:
            image.load()
            assert image.size[0] > 100 and image.size[1] > 100
    words = " ".join(page.text)
    assert "gated" in words and "ungated" in words
    assert "No gates to inspect: ungated" in words
    assert f"bayesncl-eval --init {gated}" in words and f"bayesncl-eval --init {ungated}" in words
    for run in runs:
        evaluation = json.loads((run / "eval.json").read_text())
        top1 = f"{evaluation['linear_probe']['top1']:.2f}"  # every number of a table with two decimals
        assert f"<td>{top1}</td>" in text
    # several runs: a metrics table per feature set (h, z, gated, gated_sampled), a column per run
    assert text.count("<th>metric (unit)</th><th>gated</th><th>ungated</th>") == len(FEATURE_SETS)
    assert text.count("<h4>") == len(FEATURE_SETS) + 2  # and the two factor-check tables
    # a summary card per run opens the page, before the details
    cards = [text.index(f"<section class='card'><h2>{name}</h2>") for name in ("gated", "ungated")]
    assert max(cards) < text.index("<h2>Runs</h2>")
    evaluation = json.loads((gated / "eval.json").read_text())
    card = text[cards[0]:cards[1]]
    assert f"{evaluation['linear_probe']['top1']:.1f} %" in card
    assert f"{100 * evaluation['gates']['open_rate']:.1f} %" in card
    dead = 16 - int(evaluation["metrics"]["z"]["active_dims"])
    assert f"<th scope='row'>dead dims (z)</th><td>{dead} of 16</td>" in card
    for term in TERMS:
        assert f"<dt>{term}</dt>" in text


def test_report_of_one_run_defaults_to_its_directory(runs):
    gated, _ = runs
    assert report_main([str(gated)]) == 0
    text = (gated / REPORT_FILE).read_text()
    parse(text)
    assert text.count("<section class='card'>") == 1 and "open_rate[0]" in text
    assert f"<th>metric (unit)</th>{''.join(f'<th>{s}</th>' for s in FEATURE_SETS)}" in text  # one table


def test_a_number_that_cannot_be_computed_says_why_and_never_shows_nan(runs, tmp_path, capsys):
    """eval.json stores nan as null: the report, its summary card and the printed summary say
    "not defined" with the reason; a key that is missing altogether stays "–" (not measured)."""
    gated, _ = runs
    empty = tmp_path / "empty"
    shutil.copytree(gated, empty)
    evaluation = json.loads((empty / "eval.json").read_text())
    for features in FEATURE_SETS:
        evaluation["metrics"][features]["semantic_consistency"] = None
    del evaluation["metrics"]["z"]["semantic_entropy_sum"]
    evaluation["factor_check"]["background_closed_share"] = None
    (empty / "eval.json").write_text(json.dumps(evaluation))
    text = write_report([empty], tmp_path / "empty.html").read_text()
    words = " ".join(parse(text).text)
    reason = "not defined: no test image has an active dimension"
    card = text[text.index("<section class='card'>"):text.index("<h2>Runs</h2>")]
    assert f"<th scope='row'>semantic consistency of gated z</th><td>{reason}</td>" in card
    assert words.count(reason) == 1 + len(FEATURE_SETS)
    assert "not defined: no dimension of z encodes the background" in words
    assert not re.search(r"\bnan\b", words, re.I)
    assert "<tr><th scope='row'>semantic_entropy_sum (nats)</th><td>" in text  # the row is there ...
    row = text[text.index("semantic_entropy_sum (nats)"):]
    assert re.match(r"semantic_entropy_sum \(nats\)</th><td>[\d.]+</td><td>–</td>", row)  # ... z not measured
    assert report_main([str(empty), "--out", str(tmp_path / "again.html")]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"semantic consistency of gated z +{reason}", out), out


def test_report_of_several_runs_defaults_to_the_current_directory_and_prints_each_runs_numbers(
        runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert report_main([str(p) for p in runs]) == 0
    assert (tmp_path / REPORT_FILE).is_file()
    out = capsys.readouterr().out
    assert out.rstrip().endswith(f"report: {tmp_path / REPORT_FILE}")
    gated = json.loads((runs[0] / "eval.json").read_text())
    lines = out.splitlines()
    probe = [line for line in lines if line.strip().startswith("linear probe top-1 after training (h) ")]
    assert len(probe) == 2 and probe[0].endswith(f"{gated['linear_probe']['top1']:.1f} %")
    sc = next(line for line in lines if line.strip().startswith("semantic consistency of gated z "))
    assert sc.endswith(f"{gated['metrics']['gated']['semantic_consistency']:.1f} %")
    assert any(line.strip().startswith("hard-gate open share (test) ") and line.endswith(
        f"{100 * gated['gates']['open_rate']:.1f} %") for line in lines)
    assert any(line.strip().startswith("semantic consistency of z, no gates ") for line in lines)
    assert not any("%)" in line and line.endswith("%") for line in lines), "a unit said twice"


REPORT_LAYOUT = """
const root = document.documentElement;
return {
  page: root.scrollWidth > root.clientWidth + 1,
  tables: [...document.querySelectorAll('table')].filter((t) => t.offsetParent !== null
    && (t.getBoundingClientRect().right > t.parentElement.getBoundingClientRect().right + 1
        || t.scrollWidth > root.clientWidth)).map((t) => t.innerText.slice(0, 40)),
};
"""
"""JavaScript: whether the report is wider than the window, and the shown tables that reach past
their box (a summary card, a column of the grid) or are wider than the window."""


@pytest.mark.parametrize("which", ["one", "three"])
def test_report_in_a_real_browser_shows_every_image_decoded_at_natural_size(runs, tmp_path, browser, which):
    """Headless Chromium at 1400 px: every image decodes and is shown at its natural width (or,
    when the page is narrower, wider than 700 px); the page logs no error. With three runs, two of
    them gated, the gate figures compete for the width, and every table still fits a window 800 px
    wide. The screenshot is kept next to the page for a person to look at."""
    gated, ungated = runs
    if which == "one":
        chosen = [gated]
    else:
        twin = tmp_path / "twin"
        shutil.copytree(gated, twin)
        chosen = [gated, twin, ungated]
    page = write_report(chosen, tmp_path / f"{which}.html")
    open_file(browser, page)
    images = browser.execute_script(IMAGES_STATE)
    assert len(images) == (6 if which == "one" else 3 + 1 + 2 * 4)
    for image in images:
        assert image["complete"] and image["natural"] > 0, image
        assert image["shown"] >= image["natural"] - 1 or image["shown"] > 700, image
    assert browser.errors() == []
    try:  # at 800, 1400 and 1920 px nothing is wider than the page and no table runs past its box
        for width in (1920, 1400, 800):
            browser.set_window_size(width, 1000)
            assert browser.execute_script(REPORT_LAYOUT) == {"page": False, "tables": []}, width
    finally:
        browser.set_window_size(1400, 1000)
    assert browser.save_screenshot(str(tmp_path / f"{which}.png"))
    with Image.open(tmp_path / f"{which}.png") as shot:
        assert shot.size[0] >= 1000


def test_artifacts_read_back_what_the_run_directory_holds(runs):
    gated, ungated = runs
    artifacts = load_artifacts(gated)
    assert artifacts.metrics == read_metrics(gated) and artifacts.metrics[-1]["step"] == 4
    assert artifacts.evaluation == json.loads((gated / "eval.json").read_text())
    assert artifacts.evaluation_init is None
    assert set(artifacts.figures) == {"forest", "class_heatmap", "activation_frequency", "top_images", "best_worst"}
    assert artifacts.dims["features"] == "gated z"
    assert artifacts.gate_summary and artifacts.gate_summary[0][""] == "open_rate[0]"
    bare = load_artifacts(ungated)
    assert bare.evaluation["prior"] == "none"
    assert bare.evaluation_init is None and bare.gate_summary is None and set(bare.figures) == {"best_worst"}


def test_runs_with_the_same_directory_name_get_distinct_labels(runs, tmp_path):
    gated, _ = runs
    twin = tmp_path / "other" / gated.name
    twin.mkdir(parents=True)
    for name in ("config.yaml", "metrics.jsonl"):
        (twin / name).write_bytes((gated / name).read_bytes())
    text = write_report([gated, twin], tmp_path / "twins.html").read_text()
    assert f"{gated.parent.name}/{gated.name}" in text and f"other/{gated.name}" in text


def test_report_of_a_missing_run_is_one_line_and_exit_code_2(tmp_path, capsys):
    assert report_main([str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nothing" in err and err.count("\n") == 1


def test_the_readme_glossary_says_what_the_pages_say():
    """The words are defined once: the README's Glossary table and the definitions the report and
    eval pages take from ``evaluation.glossary`` are the same text."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### Glossary"):]
    section = section[:re.search(r"\n#{2,3} ", section[1:]).start() + 1]  # up to the next heading
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 2 and cells[0] not in ("word", "---"):
            rows[cells[0]] = cells[1].replace("**", "").replace("`", "").replace("\\|", "|")
    assert rows == TERMS
