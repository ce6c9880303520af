"""The training loop end to end on tiny configs: run directory, resume, determinism, faults."""
from __future__ import annotations

import json

import pytest
import torch

from bayesncl_pyro import CheckpointError
from bayesncl_pyro.config.errors import NonFiniteStep
from bayesncl_pyro.data.augment import BatchAugment
from bayesncl_pyro.storage import checkpoints
from bayesncl_pyro.storage.metrics_log import read_metrics
from bayesncl_pyro.training.loop import train


def _params(run) -> dict[str, torch.Tensor]:
    state = checkpoints.read(run / "last.pt")
    return {f"{m}.{k}": v for m, sd in state["modules"].items() for k, v in sd.items()}


def test_a_run_shorter_than_log_every_logs_its_first_and_last_step(tiny_config):
    """The training curves of a short run are lines, not single dots: steps 1 and the last are
    logged whatever log_every is, and the steps log_every divides in between."""
    cfg = tiny_config("train.steps=7", "train.log_every=5")
    train(cfg, progress=False)
    assert [r["step"] for r in read_metrics(cfg.train.out_dir)] == [1, 5, 7]


def test_run_directory_holds_config_metrics_checkpoints_summary(tiny_config):
    cfg = tiny_config("train.steps=10", "train.keep=1")
    summary = train(cfg, progress=False)
    run = __import__("pathlib").Path(cfg.train.out_dir)
    for name in ("config.yaml", "env.json", "metrics.jsonl", "last.pt", "summary.json", "epoch_0001.pt"):
        assert (run / name).is_file(), name
    steps = [r["step"] for r in read_metrics(run)]
    assert steps == list(range(1, 11))
    assert json.loads((run / "summary.json").read_text())["steps"] == 10
    for key in ("final_loss", "probe_top1", "open_rate", "semantic_consistency"):
        assert summary[key] is not None and summary[key] == summary[key], key
    env = json.loads((run / "env.json").read_text())
    assert env["packages"]["torch"] and "git_commit" in env


def test_existing_run_is_refused(tiny_config):
    cfg = tiny_config("train.steps=2")
    train(cfg, progress=False)
    with pytest.raises(CheckpointError, match="already holds a run"):
        train(cfg, progress=False)


def test_same_seed_same_metrics(tiny_config):
    a, b = tiny_config("train.steps=6"), tiny_config("train.steps=6")
    train(a, progress=False)
    train(b, progress=False)
    read = lambda c: (__import__("pathlib").Path(c.train.out_dir) / "metrics.jsonl").read_text()
    assert read(a) == read(b)
    c = tiny_config("train.steps=6", "train.seed=1")
    train(c, progress=False)
    assert read(c) != read(a)


def test_resume_is_exact(tiny_config):
    """Stopping after 5 steps and resuming to 12 gives the weights of 12 uninterrupted steps."""
    from pathlib import Path

    whole = tiny_config("train.steps=12", "gate.estimator=concrete")
    train(whole, progress=False)
    part = tiny_config("train.steps=5", "gate.estimator=concrete")
    train(part, progress=False)
    part.train.steps = 12
    train(part, resume=True, progress=False)
    a, b = _params(Path(whole.train.out_dir)), _params(Path(part.train.out_dir))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["step"] for r in read_metrics(part.train.out_dir)] == list(range(1, 13))


def test_resume_refuses_another_architecture(tiny_config):
    cfg = tiny_config("train.steps=2")
    train(cfg, progress=False)
    cfg.model.proj_dim = 24
    cfg.train.steps = 4
    with pytest.raises(CheckpointError, match="model.proj_dim"):
        train(cfg, resume=True, progress=False)


def test_non_finite_batches_are_skipped_then_stop(tiny_config, monkeypatch):
    """NaN images: the step is skipped without moving the weights; max_bad_steps in a row stop the
    run with the step, the quantity and the last good checkpoint named."""
    from pathlib import Path

    original = BatchAugment.forward
    calls = {"n": 0}

    def poisoned(self, images, generator=None):
        calls["n"] += 1
        out = original(self, images, generator)
        # steps 3 and onwards (two views per step) get a NaN pixel
        return out.index_put((torch.tensor([0]),), torch.tensor(float("nan"))) if calls["n"] > 4 else out

    monkeypatch.setattr(BatchAugment, "forward", poisoned)
    cfg = tiny_config("train.steps=8", "train.checkpoint_every=2", "train.max_bad_steps=3")
    with pytest.warns(UserWarning, match="skipped") as caught, pytest.raises(NonFiniteStep) as info:
        train(cfg, progress=False)
    message = str(info.value)
    assert [str(w.message)[:6] for w in caught if "skipped" in str(w.message)] == ["step 3", "step 4", "step 5"]
    assert "step 5" in message and "loss is nan" in message and "last.pt" in message
    state = checkpoints.read(Path(cfg.train.out_dir) / "last.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["modules"]["net"].values() if v.is_floating_point())


class _InfiniteGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def test_non_finite_gradient_is_caught_before_the_optimizer_moves(tiny_config, monkeypatch):
    """A finite loss whose gradient is infinite: the step is skipped, the weights do not move."""
    from pathlib import Path

    from bayesncl_pyro.networks.backbones import ConvNet

    original = ConvNet.forward
    calls = {"n": 0}

    def exploding(self, x):
        calls["n"] += 1
        h = original(self, x)
        return _InfiniteGradient.apply(h) if calls["n"] > 2 and self.training else h

    monkeypatch.setattr(ConvNet, "forward", exploding)
    cfg = tiny_config("train.steps=6", "train.checkpoint_every=1", "train.max_bad_steps=2")
    with pytest.warns(UserWarning, match="gradient norm"), pytest.raises(NonFiniteStep, match="gradient norm") as info:
        train(cfg, progress=False)
    assert "step 4" in str(info.value)
    state = checkpoints.read(Path(cfg.train.out_dir) / "last.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["modules"]["net"].values() if v.is_floating_point())


def test_untrained_network_is_the_runs_initialisation(tiny_config):
    """``load_trained(untrained=True)`` rebuilds exactly the network training started from."""
    from bayesncl_pyro.evaluation.trained_run import load_trained
    from bayesncl_pyro.training.loop import build

    cfg = tiny_config("train.steps=1")
    initial = {k: v.clone() for k, v in build(cfg).net.state_dict().items()}
    train(cfg, progress=False)
    again = load_trained(cfg.train.out_dir, untrained=True).net.state_dict()
    assert initial.keys() == again.keys()
    assert all(torch.equal(initial[k], again[k]) for k in initial)


def test_train_subset_is_class_balanced_and_fixed():
    from bayesncl_pyro.data.sources import balanced_subset

    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    index = balanced_subset(labels, 30)
    assert len(set(index.tolist())) == 30
    assert torch.bincount(labels[index]).tolist() == [10, 10, 10]
    assert torch.equal(index, balanced_subset(labels, 30))
    small = balanced_subset(labels, 70)
    assert torch.bincount(labels[small]).tolist() == [25, 25, 20]


def test_eval_every_logs_the_test_check_without_changing_training(tiny_config):
    """``train.eval_every=1`` logs the summary's test numbers at the end of every epoch but the last
    (the summary covers that one), and the training records are those of a run without it."""
    plain = tiny_config("train.epochs=3")
    checked = tiny_config("train.epochs=3", "train.eval_every=1")
    train(plain, progress=False)
    summary = train(checked, progress=False)
    records = read_metrics(checked.train.out_dir)
    tests = [r for r in records if "test_semantic_consistency" in r]
    per_epoch = 256 // 32
    assert [r["step"] for r in tests] == [per_epoch, 2 * per_epoch]
    for r in tests:
        assert 0 <= r["test_semantic_consistency"] <= 100 and 0 <= r["test_open_rate"] <= 1
        assert 0 <= r["test_probe_top1"] <= 100
    assert [r for r in records if "loss" in r] == read_metrics(plain.train.out_dir)
    assert summary["semantic_consistency"] >= 0


def test_runs_of_one_seed_pair_across_methods(tiny_config, monkeypatch):
    """NCL and BayesNCL (score, which draws random gates every step) with one seed start from the
    same backbone, projector and online classifier and see the same augmented views."""
    from bayesncl_pyro.training.session import build

    ncl = tiny_config("gate.prior=none", "train.steps=3")
    bayes = tiny_config("gate.prior=bernoulli", "gate.estimator=score", "train.steps=3")
    a, b = build(ncl), build(bayes)
    for part in ("backbone", "projector"):
        sa, sb = getattr(a.net, part).state_dict(), getattr(b.net, part).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(torch.equal(x, y) for x, y in zip(a.classifier.parameters(), b.classifier.parameters()))

    seen: dict[str, list[torch.Tensor]] = {}
    original = BatchAugment.forward

    def recording(self, images, generator=None):
        out = original(self, images, generator)
        seen.setdefault(current, []).append(out.clone())
        return out

    monkeypatch.setattr(BatchAugment, "forward", recording)
    for current, cfg in (("ncl", ncl), ("bayes", bayes)):  # noqa: B007 (read by `recording`)
        train(cfg, progress=False)
    assert len(seen["ncl"]) == len(seen["bayes"]) >= 6
    assert all(torch.equal(x, y) for x, y in zip(seen["ncl"], seen["bayes"]))
