"""The evaluation procedure (batch statistics, test order, batch size) against hand-computed
batch normalisation and orders whose batches can be counted."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.evaluation.procedure import (
    EvalProcedure,
    batch_order,
    batches,
    mean_classes_per_batch,
    procedure_features,
)


class LinearBN(nn.Module):
    """x -> BN(x W): the smallest network with a BatchNorm layer and a ``features`` method."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.bn.running_mean.fill_(0.5)
        self.bn.running_var.fill_(2.0)
        self.bn.weight.data = torch.tensor([1.0, 2.0, 0.5])
        self.bn.bias.data = torch.tensor([0.1, -0.2, 0.3])

    def features(self, x):
        return {"gated": self.bn(self.linear(x))}


def by_hand(net: LinearBN, x: torch.Tensor, batch_stats: bool) -> torch.Tensor:
    y = net.linear(x)
    if batch_stats:
        mean, var = y.mean(0), y.var(0, unbiased=False)
    else:
        mean, var = net.bn.running_mean, net.bn.running_var
    return (y - mean) / torch.sqrt(var + net.bn.eps) * net.bn.weight + net.bn.bias


def identity(x):
    return x


@torch.no_grad()
def test_batch_statistics_normalise_each_batch_on_its_own():
    net = LinearBN()
    x = torch.randn(10, 4)
    labels = torch.tensor([0, 1] * 5)
    procedure = EvalProcedure("batch", "given", batch_size=4)
    got = procedure_features(net, identity, x, labels, procedure, torch.device("cpu"))["gated"]
    # batches [0:4], [4:8], [8:10]
    expected = torch.cat([by_hand(net, x[a:b], True) for a, b in ((0, 4), (4, 8), (8, 10))])
    assert torch.allclose(got, expected, atol=1e-5)
    # the network itself keeps its running statistics and its mode
    assert torch.equal(net.bn.running_mean, torch.full((3,), 0.5)) and net.training


@torch.no_grad()
def test_running_statistics_do_not_depend_on_the_batch():
    net = LinearBN()
    x = torch.randn(9, 4)
    labels = torch.arange(9) % 3
    running = [procedure_features(net, identity, x, labels, EvalProcedure("running", order, batch_size=b),
                                  torch.device("cpu"))["gated"] for order in ("given", "shuffled") for b in (2, 5)]
    for result in running:
        assert torch.allclose(result, by_hand(net, x, False), atol=1e-5)


@torch.no_grad()
def test_shuffled_batch_statistics_come_back_in_split_order():
    net = LinearBN()
    x = torch.randn(12, 4)
    labels = torch.arange(12) % 3
    procedure = EvalProcedure("batch", "shuffled", batch_size=4, seed=3)
    got = procedure_features(net, identity, x, labels, procedure, torch.device("cpu"))["gated"]
    order = batch_order(labels, procedure)
    expected = torch.empty(12, 3)
    for part in order.split(4):
        expected[part] = by_hand(net, x[part], True)
    assert torch.allclose(got, expected, atol=1e-5)


def test_class_blocks_reproduce_a_class_sorted_split():
    """50 images a class read in class order with batches of 128 (ImageNet-100's validation) is
    class_blocks with batch_size / classes_per_batch = 50."""
    labels = torch.arange(10).repeat_interleave(50)
    procedure = EvalProcedure("batch", "class_blocks", batch_size=128, classes_per_batch=128 / 50)
    assert torch.equal(batch_order(labels, procedure), torch.arange(500))
    # a batch of 128 over runs of 50 touches 3 or 4 classes
    counts = [len(torch.unique(labels[p])) for p in batches(torch.arange(500), 128)]
    assert mean_classes_per_batch(labels, procedure) == pytest.approx(sum(counts) / len(counts))
    assert set(counts) <= {3, 4}


def test_class_blocks_on_a_mixed_split_is_a_permutation_of_single_class_runs():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (1000,), generator=g)
    procedure = EvalProcedure("batch", "class_blocks", batch_size=100, classes_per_batch=4)
    order = batch_order(labels, procedure)
    assert torch.equal(order.sort().values, torch.arange(1000))
    for run in order.split(25)[:10]:  # the first round: 25 of each class in turn
        assert len(torch.unique(labels[run])) == 1
    assert 4 <= mean_classes_per_batch(labels, procedure) <= 6
    # balanced classes of 100 with one class a batch of 100: every batch is one class
    balanced = torch.arange(10).repeat(100)[torch.randperm(1000, generator=g)]
    one = EvalProcedure("batch", "class_blocks", batch_size=100, classes_per_batch=1)
    assert mean_classes_per_batch(balanced, one) == 1.0


def test_a_last_batch_of_one_joins_the_one_before():
    parts = batches(torch.arange(9), 4)
    assert [len(p) for p in parts] == [4, 5]


@pytest.mark.parametrize("kwargs,name", [({"batchnorm": "train"}, "batchnorm"), ({"order": "sorted"}, "order"),
                                         ({"batch_size": 1}, "batch_size"), ({"classes_per_batch": 0.5}, "classes")])
def test_bad_settings_are_refused_by_name(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        EvalProcedure(**kwargs)


def test_running_procedure_on_a_run_matches_its_evaluation(tmp_path_factory):
    """The run-level measure under ``running`` is the SC that bayesncl-eval reports for the same
    checkpoint; the batch-statistics procedures are stored beside it and reused until the step changes."""
    import json

    from bayesncl_pyro.evaluation.evaluate import evaluate_run
    from bayesncl_pyro.evaluation.procedure import PROCEDURE_FILE, evaluate_procedures
    from tests.conftest import tiny_run

    run = tiny_run(tmp_path_factory, "procedure", "model.proj_batchnorm=false", "gate.hidden=0")
    result, _, _ = evaluate_run(run, progress=False)
    names = ["running", "batch_shuffled", "batch_class_blocks"]
    entries = evaluate_procedures(run, names)
    for key in ("semantic_consistency", "semantic_consistency_supported", "semantic_consistency_weighted"):
        assert entries["running"]["trained"][key] == pytest.approx(result["metrics"]["gated"][key], abs=1e-6)
    assert entries["running"]["trained"]["open_rate"] == pytest.approx(result["gates"]["open_rate"], abs=1e-9)
    # the backbone has BatchNorm: batch statistics give other features
    assert entries["batch_shuffled"]["trained"] != entries["running"]["trained"]
    stored = json.loads((run / PROCEDURE_FILE).read_text())
    assert set(stored) == set(names)
    # a stale entry (another step) is measured again, not shown
    stored["running"]["step"] = -1
    stored["running"]["trained"]["semantic_consistency"] = 123.0
    (run / PROCEDURE_FILE).write_text(json.dumps(stored))
    again = evaluate_procedures(run, ["running"])
    assert again["running"]["trained"]["semantic_consistency"] == pytest.approx(
        result["metrics"]["gated"]["semantic_consistency"], abs=1e-6)
    # entries that are current are read back without loading the run or its data
    from bayesncl_pyro.evaluation import procedure

    def refuse(*args, **kwargs):
        raise AssertionError("a current entry loaded the run")

    original, procedure.load_trained = procedure.load_trained, refuse
    try:
        assert evaluate_procedures(run, names) == {name: json.loads((run / PROCEDURE_FILE).read_text())[name]
                                                   for name in names}
    finally:
        procedure.load_trained = original
    # ... but never for a checkpoint that no longer fits the run's config.yaml
    from bayesncl_pyro.config.errors import CheckpointError

    config = run / "config.yaml"
    text = config.read_text()
    try:
        config.write_text(text.replace("  prior_prob: ", "  prior_prob: 0.123 #", 1))
        with pytest.raises(CheckpointError, match="written for another configuration: gate.prior_prob"):
            evaluate_procedures(run, names)
    finally:
        config.write_text(text)


def test_study_pairs_methods_and_procedures_by_seed(tmp_path):
    """procedure_study.summarize against differences computed by hand on made-up entries."""
    import numpy as np

    from bayesncl_pyro.evaluation.plots import save_figure
    from bayesncl_pyro.experiments.procedure_study import study_figure, summarize

    def entry(sc, sc_init):
        measures = {"semantic_consistency": sc, "semantic_consistency_supported": sc,
                    "semantic_consistency_weighted": sc, "open_rate": None}
        return {"trained": measures, "init": {**measures, "semantic_consistency": sc_init},
                "mean_classes_per_batch": 2.0}

    ncl = {0: (20.0, 15.0), 1: (22.0, 14.0), 2: (18.0, 15.0)}
    ste = {0: (25.0, 15.0), 1: (24.0, 14.0), 2: (24.0, 15.0)}
    shift = {"ncl": -3.0, "bayesncl_ste": -1.0}  # the second procedure lowers both, NCL more
    found = {"d": {m: {s: {"running": entry(*v), "batch_shuffled": entry(v[0] + shift[m], v[1])}
                       for s, v in table.items()} for m, table in (("ncl", ncl), ("bayesncl_ste", ste))}}
    result = summarize(found, ["running", "batch_shuffled"])["datasets"]["d"]
    pick = {(r["procedure"], r["measure"]): r for r in result["methods"]}
    diffs = np.array([ste[s][0] - ncl[s][0] for s in range(3)])
    assert pick[("running", "semantic_consistency")]["mean"] == pytest.approx(diffs.mean())
    relative = np.array([100 * (ste[s][0] / ncl[s][0] - 1) for s in range(3)])
    assert pick[("running", "semantic_consistency_relative_percent")]["mean"] == pytest.approx(relative.mean())
    gains = np.array([(ste[s][0] - ste[s][1]) - (ncl[s][0] - ncl[s][1]) for s in range(3)])
    assert pick[("running", "semantic_consistency_gain")]["mean"] == pytest.approx(gains.mean())
    procs = {(r["method"], r["measure"]): r for r in result["procedures"]}
    assert procs[("ncl", "semantic_consistency")]["mean"] == pytest.approx(-3.0)
    assert procs[("bayesncl_ste − ncl", "semantic_consistency")]["mean"] == pytest.approx(2.0)
    shifted = np.array([100 * ((ste[s][0] - 1) / (ncl[s][0] - 3) - 1) for s in range(3)])
    assert procs[("bayesncl_ste / ncl − 1 (%)", "semantic_consistency")]["mean"] == pytest.approx(
        (shifted - relative).mean())
    summary = summarize(found, ["running", "batch_shuffled"])
    assert save_figure(study_figure(summary), tmp_path / "procedure.png").stat().st_size > 10_000
