"""The supported / weighted SC computed for a run whose eval.json lacks them equals what the full
evaluation writes, and suite rows read it from either file."""
from __future__ import annotations

import json

import pytest

from bayesncl_pyro.evaluation.evaluate import evaluate_run, result_files
from bayesncl_pyro.evaluation.sc_variants import (SC_VARIANTS_FILE, VARIANT_METRICS, ensure_sc_variants,
                                                  read_sc_variants, sc_variant)
from tests.conftest import tiny_run


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    path = tiny_run(tmp_path_factory, "sc_variants_run")
    for init in (True, False):
        evaluate_run(path, init=init, progress=False)
    return path


def _strip(path, init):
    """eval.json as an earlier version wrote it: without the two variants; returns what was removed."""
    target = path / result_files(init)[0]
    result = json.loads(target.read_text())
    removed = {}
    for features, values in result["metrics"].items():
        removed[features] = {key: values.pop(key) for key in VARIANT_METRICS}
    target.write_text(json.dumps(result))
    return removed


def test_backfilled_variants_equal_the_full_evaluation_for_thresholded_and_drawn_gates(evaluated_run):
    path = evaluated_run
    expected = {init: _strip(path, init) for init in (True, False)}
    stored = ensure_sc_variants(path)
    assert set(stored) == {"init", "trained"}
    for init, stage in ((True, "init"), (False, "trained")):
        for features in ("gated", "gated_sampled"):
            for key in VARIANT_METRICS:
                want = expected[init][features][key]
                got = stored[stage][features][key]
                assert got == pytest.approx(want, abs=1e-9), (stage, features, key)
                evaluation = json.loads((path / result_files(init)[0]).read_text())
                assert sc_variant(evaluation, read_sc_variants(path), init, key, features) == pytest.approx(want, abs=1e-9)
    # a second call computes nothing new and leaves the file as it was
    before = (path / SC_VARIANTS_FILE).read_bytes()
    assert ensure_sc_variants(path) == stored
    assert (path / SC_VARIANTS_FILE).read_bytes() == before


def test_nothing_is_written_when_eval_json_already_holds_the_variants(tmp_path_factory):
    path = tiny_run(tmp_path_factory, "sc_variants_fresh")
    result, _, _ = evaluate_run(path, init=False, progress=False)
    assert all(key in result["metrics"]["gated"] for key in VARIANT_METRICS)
    assert ensure_sc_variants(path) == {}
    assert not (path / SC_VARIANTS_FILE).exists()
    key = "semantic_consistency_weighted"
    assert sc_variant(result, read_sc_variants(path), False, key) == result["metrics"]["gated"][key]
    assert read_sc_variants(path) == {} and sc_variant({}, {}, True, key) is None
