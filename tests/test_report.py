"""The HTML report: self-contained, one column per run, every part present or its command named."""
from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from bayesncl_pyro.cli.report import main as report_main
from bayesncl_pyro.evaluation.evaluate import FEATURE_SETS, evaluate_run
from bayesncl_pyro.evaluation.gate_posterior import inspect_run
from bayesncl_pyro.evaluation.report import REPORT_FILE, load_artifacts, write_report
from bayesncl_pyro.storage.metrics_log import read_metrics
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
    return gated, ungated


def test_report_of_two_runs_is_self_contained_and_side_by_side(runs, tmp_path):
    gated, ungated = runs
    out = write_report([gated, ungated], tmp_path / "both.html")
    text = out.read_text()
    page = parse(text)
    assert not re.search(r"""(src|href)=['"](?!data:)""", text), "every resource must be embedded"
    assert "<link" not in text and "<script" not in text
    # training curves + four gate figures of the inspected run
    assert len(page.images) == 5
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
        top1 = f"{evaluation['linear_probe']['top1']:.4f}".rstrip("0").rstrip(".")
        assert f"<td>{top1}</td>" in text
    sets = len(FEATURE_SETS)  # h, z, gated, gated_sampled
    assert f"<th colspan='{sets}' class='run'>gated</th><th colspan='{sets}' class='run'>ungated</th>" in text
    assert "--columns: 2" in text  # the two factor-check tables side by side


def test_report_of_one_run_defaults_to_its_directory(runs):
    gated, _ = runs
    assert report_main([str(gated)]) == 0
    text = (gated / REPORT_FILE).read_text()
    parse(text)
    assert "--columns: 2" not in text and "open_rate[0]" in text


def test_report_of_several_runs_defaults_to_the_current_directory(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert report_main([str(p) for p in runs]) == 0
    assert (tmp_path / REPORT_FILE).is_file()


def test_artifacts_read_back_what_the_run_directory_holds(runs):
    gated, ungated = runs
    artifacts = load_artifacts(gated)
    assert artifacts.metrics == read_metrics(gated) and artifacts.metrics[-1]["step"] == 4
    assert artifacts.evaluation == json.loads((gated / "eval.json").read_text())
    assert artifacts.evaluation_init is None
    assert set(artifacts.figures) == {"forest", "class_heatmap", "activation_frequency", "top_images"}
    assert artifacts.gate_summary and artifacts.gate_summary[0][""] == "open_rate[0]"
    bare = load_artifacts(ungated)
    assert bare.evaluation["prior"] == "none"
    assert bare.evaluation_init is None and bare.gate_summary is None and bare.figures == {}


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
