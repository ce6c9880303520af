"""SC over training: every kept epoch checkpoint measured, the last one as bayesncl-eval measures it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bayesncl_pyro.config.errors import RunWarning
from bayesncl_pyro.evaluation.evaluate import evaluate_run
from bayesncl_pyro.evaluation.training_trace import TRACE_FILE, epoch_checkpoints, trace_run
from bayesncl_pyro.training.loop import train


def test_trace_measures_each_epoch_checkpoint_and_matches_the_evaluation(tiny_config):
    cfg = tiny_config("train.keep=2", "train.epochs=2")
    train(cfg, progress=False)
    run = cfg.train.out_dir
    assert [e for e, _ in epoch_checkpoints(run)] == [1, 2]
    trace = trace_run(run)
    assert [trace[name]["epoch"] for _, name in epoch_checkpoints(run)] == [1, 2]
    assert trace["epoch_0001.pt"]["step"] < trace["epoch_0002.pt"]["step"]
    result, _, _ = evaluate_run(run, progress=False)
    last = trace["epoch_0002.pt"]
    for key in ("semantic_consistency", "semantic_consistency_supported", "semantic_consistency_weighted"):
        assert last[key] == pytest.approx(result["metrics"]["gated"][key], abs=1e-6)
    assert last["knn_top1"] == pytest.approx(result["metrics"]["h"]["knn_top1"], abs=1e-6)
    assert last["open_rate"] == pytest.approx(result["gates"]["open_rate"], abs=1e-9)
    # stored, and a stale entry (another step) is measured again
    path = Path(run) / TRACE_FILE
    stored = json.loads(path.read_text())
    stored["epoch_0001.pt"].update(step=-1, semantic_consistency=999.0)
    path.write_text(json.dumps(stored))
    assert trace_run(run)["epoch_0001.pt"]["semantic_consistency"] == pytest.approx(
        trace["epoch_0001.pt"]["semantic_consistency"], abs=1e-9)


def test_trace_reads_the_data_once_and_not_at_all_when_current(tiny_config, monkeypatch):
    """Many checkpoints of one run share one read of its splits; a trace that is current reads none."""
    from bayesncl_pyro.evaluation import trained_run

    cfg = tiny_config("train.keep=3", "train.epochs=3")
    train(cfg, progress=False)
    reads = []
    real = trained_run.load_split
    monkeypatch.setattr(trained_run, "load_split", lambda data, split: reads.append(split) or real(data, split))
    first = trace_run(cfg.train.out_dir)
    assert sorted(reads) == ["test", "train"]
    reads.clear()
    assert trace_run(cfg.train.out_dir) == first
    assert reads == []


def test_load_trained_like_refuses_another_run(tiny_config):
    from bayesncl_pyro.evaluation.trained_run import load_trained, read_checkpoint

    one, two = tiny_config("train.seed=0"), tiny_config("train.seed=1")
    for cfg in (one, two):
        train(cfg, progress=False)
    loaded = load_trained(one.train.out_dir)
    assert read_checkpoint(one.train.out_dir).step == loaded.step > 0
    again = load_trained(one.train.out_dir, untrained=True, like=loaded)
    assert again.test_set is loaded.test_set and again.step == 0
    # the same run spelled another way (relative to the working directory) is the same run
    relative = os.path.relpath(one.train.out_dir)
    assert load_trained(relative, like=loaded).train_set is loaded.train_set
    with pytest.raises(ValueError, match="like= must be a loaded copy"):
        load_trained(two.train.out_dir, like=loaded)


def test_a_damaged_checkpoint_is_left_out_with_a_warning(tiny_config):
    cfg = tiny_config("train.keep=3", "train.epochs=3")
    train(cfg, progress=False)
    run = Path(cfg.train.out_dir)
    first = trace_run(run)
    damaged = run / "epoch_0002.pt"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    with pytest.warns(RunWarning, match="epoch_0002.pt is left out"):
        again = trace_run(run)
    assert sorted(again) == ["epoch_0001.pt", "epoch_0003.pt"]
    assert again["epoch_0003.pt"] == first["epoch_0003.pt"]
    assert "epoch_0002.pt" not in json.loads((run / TRACE_FILE).read_text())


def _reads_of(monkeypatch) -> list[str]:
    from bayesncl_pyro.storage import checkpoints

    reads: list[str] = []
    real = checkpoints.read
    monkeypatch.setattr(checkpoints, "read", lambda path, *a, **k: reads.append(Path(path).name) or real(path, *a, **k))
    return reads


def test_each_checkpoint_is_read_once_when_measured(tiny_config, monkeypatch):
    cfg = tiny_config("train.keep=2", "train.epochs=2")
    train(cfg, progress=False)
    reads = _reads_of(monkeypatch)
    trace_run(cfg.train.out_dir)
    assert sorted(reads) == ["epoch_0001.pt", "epoch_0002.pt"]
    reads.clear()
    trace_run(cfg.train.out_dir)  # current: each is read to learn its step, and only that
    assert sorted(reads) == ["epoch_0001.pt", "epoch_0002.pt"]


def test_stored_points_are_not_shown_for_a_run_whose_config_no_longer_fits(tiny_config):
    """config.yaml edited after the trace (here the seed): the checkpoints are refused as bayesncl-eval
    refuses them, and their stored points are dropped, not returned as current."""
    cfg = tiny_config("train.keep=2", "train.epochs=2")
    train(cfg, progress=False)
    run = Path(cfg.train.out_dir)
    assert sorted(trace_run(run)) == ["epoch_0001.pt", "epoch_0002.pt"]
    config = run / "config.yaml"
    text = config.read_text()
    assert f"  seed: {cfg.train.seed}\n" in text
    config.write_text(text.replace(f"  seed: {cfg.train.seed}\n", f"  seed: {cfg.train.seed + 1}\n"))
    with pytest.warns(RunWarning, match="written for another configuration"):
        assert trace_run(run) == {}
    assert json.loads((run / TRACE_FILE).read_text()) == {}


def test_load_trained_takes_the_checkpoint_it_was_given_and_only_that(tiny_config):
    from bayesncl_pyro.evaluation.trained_run import load_trained, read_checkpoint

    cfg = tiny_config("train.keep=2", "train.epochs=2")
    train(cfg, progress=False)
    first = read_checkpoint(cfg.train.out_dir, "epoch_0001.pt")
    loaded = load_trained(cfg.train.out_dir, checkpoint_name="epoch_0001.pt", checkpoint=first)
    assert loaded.step == first.step < read_checkpoint(cfg.train.out_dir).step
    with pytest.raises(ValueError, match="checkpoint= must be .*last.pt as read; got .*epoch_0001.pt"):
        load_trained(cfg.train.out_dir, checkpoint=first)
    with pytest.raises(ValueError, match="exclude each other"):
        load_trained(cfg.train.out_dir, checkpoint_name="epoch_0001.pt", checkpoint=first, untrained=True)


def test_a_config_that_cannot_be_read_refuses_the_trace_and_keeps_it(tiny_config):
    from bayesncl_pyro.config.errors import BayesNCLError

    cfg = tiny_config("train.keep=2", "train.epochs=2")
    train(cfg, progress=False)
    run = Path(cfg.train.out_dir)
    trace_run(run)
    kept = (run / TRACE_FILE).read_text()
    (run / "config.yaml").write_text("data: [unclosed\n")
    with pytest.raises(BayesNCLError, match="config.yaml"):
        trace_run(run)
    assert (run / TRACE_FILE).read_text() == kept
