"""Progress in a log: where stderr is no terminal, decoding, training and evaluation write plain
lines (what, count/total, rate, ETA) at the start, every interval and at the end; a terminal
still gets tqdm's bar, and ``--no-progress`` (``silenced``) shows nothing at all."""
from __future__ import annotations

import io
import re

import torch
from torchvision.io import write_png
from tqdm.std import tqdm as plain_tqdm

from bayesncl_pyro.data import progress as progress_module
from bayesncl_pyro.data.imagefolder_store import load_imagefolder_store
from bayesncl_pyro.data.progress import ProgressLines, progress, silenced
from bayesncl_pyro.data.vision import load_imagefolder
from bayesncl_pyro.evaluation.evaluate import extract_split
from bayesncl_pyro.evaluation.linear_probe import select_linear_probe
from bayesncl_pyro.evaluation.trained_run import load_trained
from bayesncl_pyro.training.loop import train

from .conftest import tiny_run


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(text: str, what: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(what)]


def test_a_log_gets_a_line_at_the_start_every_interval_and_at_the_end():
    stream, clock = io.StringIO(), Clock()
    bar = progress(total=1000, desc="decoding train", unit="img", stream=stream, interval=30, clock=clock)
    assert isinstance(bar, ProgressLines)
    for _ in range(10):
        clock.now += 10
        bar.update(95)
    bar.set_postfix(loss="1.234")
    bar.close()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines == [
        "decoding train: 0/1000 img (0%), ? img/s, 00:00 elapsed, ETA ?",
        "decoding train: 285/1000 img (28%), 9.5 img/s, 00:30 elapsed, ETA 01:15",
        "decoding train: 570/1000 img (57%), 9.5 img/s, 01:00 elapsed, ETA 00:45",
        "decoding train: 855/1000 img (86%), 9.5 img/s, 01:30 elapsed, ETA 00:15",
        "decoding train: 950/1000 img (95%), 9.5 img/s, 01:40 elapsed, ETA 00:05, loss=1.234",
    ]


def test_lines_count_from_where_a_resumed_bar_starts_and_iterables_close_themselves():
    stream, clock = io.StringIO(), Clock()
    bar = progress(total=100, initial=40, desc="train run (SVI steps)", unit="step", stream=stream, clock=clock)
    clock.now += 20
    bar.update(10)
    bar.close()
    assert stream.getvalue().splitlines() == [
        "train run (SVI steps): 40/100 step (40%), ? step/s, 00:00 elapsed, ETA ?",
        "train run (SVI steps): 50/100 step (50%), 0.5 step/s, 00:20 elapsed, ETA 01:40",
    ]
    stream = io.StringIO()
    assert list(progress(["h", "z"], desc="metrics", unit="set", stream=stream, interval=0, clock=clock)) == ["h", "z"]
    assert stream.getvalue().splitlines() == [
        "metrics: 0/2 set (0%), ? set/s, 00:00 elapsed, ETA ?",
        "metrics: 1/2 set (50%), ? set/s, 00:00 elapsed, ETA ?",
        "metrics: 2/2 set (100%), ? set/s, 00:00 elapsed, ETA ?",
    ]


def test_a_new_postfix_is_progress_too_and_large_counts_are_scaled():
    stream, clock = io.StringIO(), Clock()
    bar = progress(total=2_000_000, desc="features", unit="img", unit_scale=True, stream=stream, interval=30,
                   clock=clock)
    clock.now += 31
    bar.set_postfix_str("decay 0.1: 40 it")  # a long fit: no update, but a line each interval
    clock.now += 9
    bar.update(1_000_000)  # within the interval of the last line: nothing until close
    bar.close()
    assert stream.getvalue().splitlines() == [
        "features: 0.00/2.00M img (0%), ? img/s, 00:00 elapsed, ETA ?",
        "features: 0.00/2.00M img (0%), ? img/s, 00:31 elapsed, ETA ?, decay 0.1: 40 it",
        "features: 1.00M/2.00M img (50%), 25.0k img/s, 00:40 elapsed, ETA 00:40, decay 0.1: 40 it",
    ]


def test_a_terminal_still_gets_the_bar():
    stream = Terminal()
    bar = progress(total=3, desc="decoding train", unit="img", stream=stream)
    assert isinstance(bar, plain_tqdm) and not bar.disable
    bar.update(3)
    bar.close()
    assert "\r" in stream.getvalue() and "3/3" in stream.getvalue() and "|" in stream.getvalue()


def test_no_progress_shows_nothing():
    for stream in (io.StringIO(), Terminal()):
        with progress(total=3, desc="x", stream=stream, enabled=False) as bar:
            bar.update(3)
        with silenced():
            with silenced(False):  # an inner command's progress cannot undo an outer --no-progress
                with progress(total=3, desc="x", stream=stream) as bar:
                    bar.update(3)
        assert stream.getvalue() == ""
    stream = io.StringIO()
    with silenced(False), progress(total=1, desc="shown", stream=stream) as bar:
        bar.update(1)
    assert _lines(stream.getvalue(), "shown: ")


def _image_tree(root, per_class: int) -> None:
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                write_png(torch.randint(0, 255, (3, 24, 24), dtype=torch.uint8), str(root / split / name / f"{i}.png"))


def test_decoding_a_store_or_a_cache_writes_lines_to_a_log(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "INTERVAL", 0.0)  # a line at every chunk
    _image_tree(tmp_path / "tree", per_class=6)
    load_imagefolder_store(str(tmp_path / "tree"), "train", 16, cache_dir=str(tmp_path / "cache"), processes=1,
                           chunk=4)
    lines = _lines(capsys.readouterr().err, "decoding train: ")
    assert lines[0].startswith("decoding train: 0/12 img (0%), ? img/s")
    assert [re.match(r"decoding train: (\d+)/12 img", line)[1] for line in lines] == ["0", "4", "8", "12"]
    assert "ETA 00:00" in lines[-1] and re.search(r", [\d.k]+ img/s, ", lines[-1])

    load_imagefolder(str(tmp_path / "tree"), "test", cache_dir=str(tmp_path / "cache"))
    lines = _lines(capsys.readouterr().err, f"decoding {tmp_path / 'tree' / 'test'}: ")
    assert lines and lines[-1].startswith(f"decoding {tmp_path / 'tree' / 'test'}: 12/12 img (100%)")

    with silenced():
        load_imagefolder(str(tmp_path / "tree"), "train", cache_dir=str(tmp_path / "cache"))
    assert "decoding" not in capsys.readouterr().err


def test_training_writes_lines_to_a_log_and_none_without_progress(tiny_config, capsys, monkeypatch):
    train(tiny_config("train.steps=3"), progress=True)
    lines = _lines(capsys.readouterr().err, "train run0 (SVI steps): ")
    assert lines[0].startswith("train run0 (SVI steps): 0/3 step (0%), ? step/s, 00:00 elapsed, ETA ?")
    assert re.fullmatch(r"train run0 \(SVI steps\): 3/3 step \(100%\), [\d.]+ step/s, \d\d:\d\d elapsed, "
                        r"ETA 00:00, loss=-?[\d.]+, open=\d+%", lines[-1]), lines[-1]
    assert len(lines) == 2  # three steps take less than the 30 s between two lines

    monkeypatch.setattr(progress_module, "INTERVAL", 0.0)
    train(tiny_config("train.steps=3"), progress=True)
    lines = _lines(capsys.readouterr().err, "train run1 (SVI steps): ")
    assert lines[-1].startswith("train run1 (SVI steps): 3/3 step (100%)")
    assert {re.match(r"train run1 \(SVI steps\): (\d)/3", line)[1] for line in lines} == {"0", "1", "2", "3"}
    train(tiny_config("train.steps=3"), progress=False)
    assert "step" not in capsys.readouterr().err


def test_evaluation_writes_lines_to_a_log(tmp_path_factory, capsys):
    run = load_trained(tiny_run(tmp_path_factory, "progress"), device="cpu")
    capsys.readouterr()
    extract_split(run, run.test_set, "test features", True)
    lines = _lines(capsys.readouterr().err, "test features (h, z, gates): ")
    assert lines[0].startswith("test features (h, z, gates): 0.00/128 img (0%)")
    assert lines[-1].startswith("test features (h, z, gates): 128/128 img (100%)") and "ETA 00:00" in lines[-1]

    generator = torch.Generator().manual_seed(0)
    h, labels = torch.randn(60, 4, generator=generator), torch.arange(60) % 3
    select_linear_probe(h, labels, 3, weight_decays=(1e-2, 1e-3), progress=True)
    lines = _lines(capsys.readouterr().err, "linear probe (fits: 2 weight decays on ")
    assert lines[0].endswith("0/3 fit (0%), ? fit/s, 00:00 elapsed, ETA ?")
    assert "3/3 fit (100%)" in lines[-1] and ", ETA 00:00, decay " in lines[-1]
    select_linear_probe(h, labels, 3, weight_decays=(1e-2,), progress=False)
    assert capsys.readouterr().err == ""
