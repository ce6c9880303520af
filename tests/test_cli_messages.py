"""Messages that help: ``key=value`` overrides anywhere on every command that takes them, a config
file given without ``--config``, a run directory that does not exist, and what to pass to train a
finished run longer."""
from __future__ import annotations

import pytest

from bayesncl_pyro.cli import ablate, evaluate, prepare, report, train

from .conftest import tiny_run


def test_prepare_takes_an_override_after_its_splits():
    args = prepare.parser().parse_args(["--splits", "train", "data.store=mmap", "--config", "c.yaml", "train.seed=1"])
    assert (args.splits, args.config, args.overrides) == (["train"], "c.yaml", ["data.store=mmap", "train.seed=1"])
    args = prepare.parser().parse_args(["data.store=mmap", "--splits", "test"])
    assert (args.splits, args.overrides) == (["test"], ["data.store=mmap"])


def test_ablate_takes_an_override_before_its_file():
    args = ablate.parser().parse_args(["train.epochs=1", "grid.yaml", "--jobs", "2", "train.seed=1"])
    assert (args.spec, args.jobs, args.overrides) == ("grid.yaml", 2, ["train.epochs=1", "train.seed=1"])


def test_the_value_of_an_option_is_never_taken_for_an_override():
    args = train.parser().parse_args(["--config", "a.b=1.yaml", "c.d=2", "--resume", "x=y"])
    assert (args.config, args.resume, args.overrides) == ("a.b=1.yaml", "x=y", ["c.d=2"])


@pytest.mark.parametrize("argv, expected", [
    (["configs/x.yaml"], "'configs/x.yaml' is not a key=value override (e.g. optim.lr=0.4); to read it as the config "
                         "file, give --config configs/x.yaml"),
    (["optim.lr"], "'optim.lr' is not a key=value override (e.g. optim.lr=0.4)"),
])
def test_a_word_that_is_no_override_says_what_it_may_be(argv, expected, capsys):
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: bayesncl-train: {expected}"]


@pytest.mark.parametrize("main, argv", [
    (evaluate.main, ["/nonexistent/run"]),
    (report.main, ["/nonexistent/run"]),
    (train.main, ["--resume", "/nonexistent/run"]),
])
def test_a_run_directory_that_does_not_exist_is_named(main, argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "/nonexistent/run" in err[0] and "does not exist" in err[0], err


def test_resuming_a_finished_run_says_how_to_train_it_longer(tmp_path_factory, capsys):
    run = tiny_run(tmp_path_factory, "finished")  # train.epochs=2 capped at train.steps=4
    assert train.main(["--resume", str(run), "--no-progress"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert any("already finished" in line for line in warnings), warnings
    assert any(f"bayesncl-train --resume {run} train.epochs=4 train.steps=0 (now train.epochs=2, train.steps=4)"
               in line for line in warnings), warnings
