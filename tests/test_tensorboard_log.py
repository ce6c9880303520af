"""``train.log=tensorboard``: every number of every ``metrics.jsonl`` record is a TensorBoard scalar
at its step, in event files in the run directory; a resumed run continues the curves without a
duplicate step; the value is checked, and a missing package is one line saying how to install it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bayesncl_pyro.cli.train import main as train_main
from bayesncl_pyro.config import ConfigError, load_config
from bayesncl_pyro.storage.metrics_log import read_metrics
from bayesncl_pyro.training import loop
from bayesncl_pyro.training.loop import train

from .conftest import ROOT, TINY


def _curves(run) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard reads the run directory."""
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _logged(run) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of metrics.jsonl, every number but step and epoch."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for record in read_metrics(run):
        for key, value in record.items():
            if key not in ("step", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool):
                curves.setdefault(key, []).append((record["step"], value))
    return curves


def _assert_same(curves, logged) -> None:
    assert set(curves) == set(logged)
    for tag, points in logged.items():
        assert [step for step, _ in curves[tag]] == [step for step, _ in points], tag
        assert [value for _, value in curves[tag]] == pytest.approx([value for _, value in points], rel=1e-6), tag


def test_the_event_files_hold_what_the_metrics_log_holds(tiny_config):
    cfg = tiny_config("train.log=tensorboard", "train.steps=10", "train.eval_every=1")
    train(cfg, progress=False)
    logged = _logged(cfg.train.out_dir)
    assert {"loss", "infonce", "kl", "open_rate", "lr", "test_probe_top1"} <= set(logged)
    assert [step for step, _ in logged["loss"]] == list(range(1, 11))
    _assert_same(_curves(cfg.train.out_dir), logged)


def test_the_default_writes_no_event_files(tiny_config):
    cfg = tiny_config("train.steps=2")
    assert cfg.train.log == "jsonl"
    train(cfg, progress=False)
    assert not list(Path(cfg.train.out_dir).glob("events.out.tfevents.*"))


def test_a_resumed_run_continues_the_curves(tmp_path, monkeypatch):
    """A run dies at step 6 with steps 1-5 logged and its checkpoint at step 4; the resume cuts
    metrics.jsonl back to step 4, and TensorBoard drops the dead run's step 5 with it."""
    run = tmp_path / "run"
    overrides = [*TINY, f"train.out_dir={run}", "train.log=tensorboard", "train.checkpoint_every=4"]
    real_step, calls = loop.train_step, []

    def dies_at_step_6(*args):
        calls.append(1)
        if len(calls) == 6:
            raise RuntimeError("killed")
        return real_step(*args)

    monkeypatch.setattr(loop, "train_step", dies_at_step_6)
    with pytest.raises(RuntimeError, match="killed"):
        train(load_config(ROOT / "configs" / "scenes_quick.yaml", [*overrides, "train.steps=8"]), progress=False)
    monkeypatch.setattr(loop, "train_step", real_step)
    assert [step for step, _ in _curves(run)["loss"]] == [1, 2, 3, 4, 5]

    train(load_config(ROOT / "configs" / "scenes_quick.yaml", [*overrides, "train.steps=8"]), resume=True,
          progress=False)
    assert len(list(run.glob("events.out.tfevents.*"))) == 2
    logged = _logged(run)
    assert [step for step, _ in logged["loss"]] == list(range(1, 9))
    _assert_same(_curves(run), logged)


def test_a_log_that_is_not_a_choice_is_one_line():
    with pytest.raises(ConfigError) as error:
        load_config(ROOT / "configs" / "scenes_quick.yaml", ["train.log=csv"])
    assert str(error.value) == "train.log='csv' is not allowed; allowed: jsonl, tensorboard"


def test_a_missing_tensorboard_is_one_line_saying_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    code = train_main(["--config", str(ROOT / "configs" / "scenes_quick.yaml"), "--no-progress", *TINY,
                       "train.steps=2", "train.log=tensorboard", f"train.out_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: train.log=tensorboard needs the tensorboard package")
    assert "pip install 'bayesncl-pyro[tensorboard]'" in err[0]
    assert not (tmp_path / "run").exists()
