"""Hostile run directories: links planted where a run writes, derived files from another
checkpoint step, damaged or endless inputs to the report, and signals at awkward moments.

Each case states what a careful user expects: no file outside the run directory is touched, a
stale result is never shown as current, a bad input is one ``error:`` line (or a marked part of
the page), and stopping a command stops everything it started.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bayesncl_pyro.cli.report import main as report_main
from bayesncl_pyro.cli.train import main as train_main
from bayesncl_pyro.storage.atomic import atomic_write_text

from .conftest import ROOT, TINY, tiny_run

FRESH = ["--config", str(ROOT / "configs/scenes_quick.yaml"), "--no-progress", *TINY, "train.steps=2"]


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and len(errors[0]) < 800, err
    return errors[0]


# --- links where a run writes -----------------------------------------------------------------

def _train_over_a_linked_lock(tmp_path, capsys, link) -> tuple[Path, Path, str]:
    """A run directory whose ``.lock`` is ``link(victim, lock)``; training there must exit 2.
    Returns the run directory, the victim file and the one error line."""
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    run = tmp_path / "run"
    run.mkdir()
    link(victim, run / ".lock")
    assert train_main([*FRESH, f"train.out_dir={run}"]) == 2
    return run, victim, _error(capsys)


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(tmp_path, capsys):
    run, victim, line = _train_over_a_linked_lock(tmp_path, capsys, os.symlink)
    assert ".lock" in line and "symbolic link" in line and str(victim) in line
    assert victim.read_text() == "keep me\n"
    assert sorted(p.name for p in run.iterdir()) == [".lock"]


def test_a_lock_file_that_is_a_link_is_refused_on_resume(tmp_path_factory, tmp_path, capsys):
    run = tiny_run(tmp_path_factory, "linked_lock")
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    os.symlink(victim, run / ".lock")
    assert train_main(["--resume", str(run), "--no-progress", "train.steps=6"]) == 2
    assert "symbolic link" in _error(capsys)
    assert victim.read_text() == "keep me\n"


def test_a_dangling_metrics_link_in_a_fresh_run_is_not_followed(tmp_path, capsys):
    outside = tmp_path / "outside" / "written.jsonl"
    outside.parent.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(outside, run / "metrics.jsonl")
    assert train_main([*FRESH, f"train.out_dir={run}"]) == 2
    line = _error(capsys)
    assert "metrics.jsonl" in line and "symbolic link" in line
    assert not outside.exists()


def test_a_metrics_link_on_resume_is_refused(tmp_path_factory, tmp_path, capsys):
    run = tiny_run(tmp_path_factory, "linked_log")
    victim = tmp_path / "log.jsonl"
    shutil.move(run / "metrics.jsonl", victim)
    before = victim.read_bytes()
    os.symlink(victim, run / "metrics.jsonl")
    assert train_main(["--resume", str(run), "--no-progress", "train.steps=6"]) == 2
    assert "metrics.jsonl" in _error(capsys)
    assert victim.read_bytes() == before


@pytest.mark.parametrize("name", ["config.yaml", "last.pt", "eval.json", "dims.json", "gates.nc",
                                  "gates_summary.csv", "sc_variants.json", "report.html"])
def test_an_atomic_write_never_replaces_or_follows_a_link(tmp_path, name):
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    os.symlink(victim, tmp_path / name)
    with pytest.raises(OSError, match="symbolic link"):
        atomic_write_text(tmp_path / name, "new\n")
    assert victim.read_text() == "keep me\n" and (tmp_path / name).is_symlink()


# --- derived files record the checkpoint step; the report marks what is stale ---------------

@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    """A tiny run of 4 steps, evaluated and inspected (a pristine copy; tests copy it again)."""
    from bayesncl_pyro.evaluation.evaluate import evaluate_run
    from bayesncl_pyro.evaluation.gate_posterior import inspect_run

    run = tiny_run(tmp_path_factory, "evaluated")
    evaluate_run(run, progress=False)
    inspect_run(run, draws=10, chains=1, progress=False)
    return run


def _copy(run: Path, tmp_path: Path, name: str = "run") -> Path:
    shutil.copytree(run, tmp_path / name)
    return tmp_path / name


def _report(run: Path, tmp_path: Path, capsys) -> tuple[int, str, str, str]:
    """(exit code, printed summary, stderr, the page) of bayesncl-report on ``run``."""
    out = tmp_path / "report.html"
    code = report_main([str(run), "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err, out.read_text() if out.exists() else ""


def test_every_derived_file_records_its_checkpoint_step(evaluated):
    from bayesncl_pyro.evaluation.gate_posterior import load_netcdf

    assert json.loads((evaluated / "eval.json").read_text())["step"] == 4
    assert json.loads((evaluated / "dims.json").read_text())["step"] == 4
    record = json.loads((evaluated / "inspect.json").read_text())
    assert record["step"] == 4
    assert {"dims.json", "gates.nc", "gates_summary.csv", "gates_class_heatmap.png"} <= set(record["files"])
    assert int(load_netcdf(evaluated / "gates.nc").posterior.attrs["step"]) == 4


def test_a_current_run_has_nothing_marked(evaluated, tmp_path, capsys):
    code, out, err, page = _report(evaluated, tmp_path, capsys)
    assert code == 0, err
    assert "⚠" not in out and "⚠" not in page and "not current" not in page


def test_after_a_resume_the_old_evaluation_is_marked_stale(evaluated, tmp_path, capsys):
    run = _copy(evaluated, tmp_path)
    assert train_main(["--resume", str(run), "--no-progress", "train.steps=6"]) == 0
    capsys.readouterr()
    code, out, err, page = _report(run, tmp_path, capsys)
    assert code == 0, err
    probe = next(line for line in out.splitlines() if "linear probe top-1 after training" in line)
    assert "⚠ eval.json of step 4, not current" in probe
    assert "6 steps" in out
    assert "eval.json is from step 4 but the checkpoint (last.pt) is at step 6" in out
    assert "gate posterior and dimension ranking (gates.nc, dims.json, figures) are from step 4" in out
    assert page.count("class='stale'") >= 3


def test_an_inspection_killed_halfway_is_not_mixed_with_the_old_one(evaluated, tmp_path, capsys, monkeypatch):
    from bayesncl_pyro.evaluation import gate_posterior

    run = _copy(evaluated, tmp_path)
    old_csv = (run / "gates_summary.csv").read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gate_posterior, "draw_figures", killed)
    with pytest.raises(KeyboardInterrupt):
        gate_posterior.inspect_run(run, draws=12, chains=1, seed=5, progress=False)
    assert (run / "gates_summary.csv").read_bytes() != old_csv  # new files beside the old figures
    assert not (run / "inspect.json").exists()
    code, out, err, page = _report(run, tmp_path, capsys)
    assert code == 0, err
    assert "no complete inspect.json" in out and "dims.json is from step 4, the other files' step is unknown" in out


def test_a_file_left_from_another_inspection_is_named(evaluated, tmp_path, capsys):
    run = _copy(evaluated, tmp_path)
    other = _copy(evaluated, tmp_path, "other")
    from bayesncl_pyro.evaluation.gate_posterior import inspect_run

    inspect_run(other, draws=12, chains=1, seed=5, progress=False)
    shutil.copy(other / "gates_summary.csv", run / "gates_summary.csv")
    code, out, err, _ = _report(run, tmp_path, capsys)
    assert code == 0, err
    assert "gates_summary.csv was not written by the inspection of step 4" in out


def test_a_run_directory_of_an_earlier_version_is_step_unknown_not_an_error(evaluated, tmp_path, capsys):
    run = _copy(evaluated, tmp_path)
    for name in ("eval.json", "dims.json"):
        record = json.loads((run / name).read_text())
        record.pop("step")
        (run / name).write_text(json.dumps(record))
    (run / "inspect.json").unlink()
    code, out, err, page = _report(run, tmp_path, capsys)
    assert code == 0, err
    assert "eval.json records no step (written by an earlier version): step unknown" in out
    assert "their step is unknown" in out
    assert "step unknown" in page


def test_a_browser_built_from_another_step_is_marked(evaluated, tmp_path, capsys):
    run = _copy(evaluated, tmp_path)
    (run / "browser" / "data").mkdir(parents=True)
    (run / "browser" / "index.html").write_text("<html></html>")
    (run / "browser" / "data" / "build.json").write_text(json.dumps({"step": 2, "runs": []}))
    code, out, err, page = _report(run, tmp_path, capsys)
    assert code == 0, err
    assert "feature browser was built from step 2 but the checkpoint (last.pt) is at step 4" in out
    assert "built from step 2" in page


def test_sc_variants_of_another_step_are_not_paired_with_the_evaluation():
    from bayesncl_pyro.evaluation.sc_variants import sc_variant

    evaluation = {"step": 60, "metrics": {"gated": {}}}
    stored = {"trained": {"step": 30, "gated": {"semantic_consistency_supported": 50.0}}}
    assert sc_variant(evaluation, stored, False, "semantic_consistency_supported") is None
    stored["trained"]["step"] = 60
    assert sc_variant(evaluation, stored, False, "semantic_consistency_supported") == 50.0
    del stored["trained"]["step"]  # written by an earlier version: taken as it is
    assert sc_variant(evaluation, stored, False, "semantic_consistency_supported") == 50.0


# --- damaged or endless inputs to the report ---------------------------------------------------

def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _dev_zero(path: Path) -> None:
    path.unlink()
    os.symlink("/dev/zero", path)


DAMAGED = {
    "summary CSV of garbage": ("gates_summary.csv", lambda p: p.write_text('garbage,"x\na\nb,c\n"'),
                               ["gates_summary.csv", "damaged", "bayesncl-inspect"]),
    "summary CSV with a word for a number": (
        "gates_summary.csv", lambda p: p.write_text(p.read_text().replace("0.", "zero.", 1)),
        ["gates_summary.csv", "not a number"]),
    "summary CSV with a short line": ("gates_summary.csv", lambda p: p.write_text(p.read_text() + "x,1\n"),
                                      ["gates_summary.csv", "fields of its header"]),
    "summary CSV not UTF-8": ("gates_summary.csv", lambda p: p.write_bytes(b"\xff\xfe,\x00"), ["not UTF-8"]),
    "truncated PNG": ("gates_forest.png", lambda p: p.write_bytes(p.read_bytes()[:20]),
                      ["gates_forest.png", "not a PNG"]),
    "text as a PNG": ("dims_best_worst.png", lambda p: p.write_text("hello"), ["dims_best_worst.png", "not a PNG"]),
    "list-shaped eval.json": ("eval.json", lambda p: p.write_text("[1, 2]"),
                              ["eval.json", "JSON list, not an object", "bayesncl-eval"]),
    "eval.json with a number for metrics": (
        "eval.json", lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "metrics": 3})),
        ["eval.json", "metrics is 3"]),
    "eval.json with a word for a count": (
        "eval.json", lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "num_train": "many"})),
        ["eval.json", "num_train is 'many', not an integer"]),
    "eval.json with a string gate share": (
        "eval.json", lambda p: p.write_text(p.read_text().replace('"open_rate": ', '"open_rate": "x", "o": ', 1)),
        ["eval.json", "gates.open_rate"]),
    "list-shaped dims.json": ("dims.json", lambda p: p.write_text("[]"), ["dims.json", "JSON list"]),
    "metrics log that is a FIFO": ("metrics.jsonl", _fifo, ["metrics.jsonl", "FIFO"]),
    "metrics log that is /dev/zero": ("metrics.jsonl", _dev_zero, ["metrics.jsonl", "character device"]),
    "metrics log with an endless line": ("metrics.jsonl", lambda p: p.write_text("{" + " " * (1 << 21) + "}\n"),
                                         ["metrics.jsonl", "line 1", "characters long"]),
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_a_damaged_input_to_the_report_is_one_error_line(evaluated, tmp_path, capsys, name):
    file, damage, fragments = DAMAGED[name]
    run = _copy(evaluated, tmp_path)
    damage(run / file)
    code = report_main([str(run), "--out", str(tmp_path / "r.html")])
    line = _error(capsys)
    assert code == 2
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert not (tmp_path / "r.html").exists()


def test_metrics_lines_with_wrong_values_are_left_out_of_the_curves_and_said_so(evaluated, tmp_path, capsys):
    run = _copy(evaluated, tmp_path)
    with open(run / "metrics.jsonl", "a") as log:
        log.write('{"step": "abc", "loss": 1}\n{"loss": 2}\n{"step": 9, "loss": "x", "kl": [1]}\n'
                  '{"step": 10, "loss": 1e999}\n')
    code, out, err, page = _report(run, tmp_path, capsys)
    assert code == 0, err
    assert "5 logged value(s) of metrics.jsonl that are not finite numbers" in page


def test_a_class_named_like_mathtext_is_drawn_as_written(tmp_path):
    import torch

    from bayesncl_pyro.evaluation.gate_posterior import HEATMAP_PNG, draw_figures

    generator = torch.Generator().manual_seed(0)
    n, d = 24, 6
    gate_probs = torch.rand(n, d, generator=generator)
    gate = (gate_probs > 0.5).float()
    z = torch.rand(n, d, generator=generator)
    test = {"gate_probs": gate_probs, "gate": gate, "z": z, "gated": z * gate,
            "labels": torch.arange(n) % 3}
    draws = {"open_rate": torch.rand(1, 5, d, generator=generator)}
    images = torch.randint(0, 255, (n, 3, 8, 8), dtype=torch.uint8, generator=generator)
    classes = ["$\\bogus{x$", "cost $5", "a_b^c"]
    figures = draw_figures(test, draws, images, classes, tmp_path, top_dims=2, top_images=2)
    assert figures["class_heatmap"] == tmp_path / HEATMAP_PNG
    assert (tmp_path / HEATMAP_PNG).read_bytes().startswith(b"\x89PNG")


def test_a_run_directory_named_like_mathtext_gets_its_report(evaluated, tmp_path, capsys):
    run = _copy(evaluated, tmp_path, "$\\bogus{x$")
    code, out, err, page = _report(run, tmp_path, capsys)
    assert code == 0, err
    assert "<img alt='training curves'" in page


# --- signals ------------------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has ended; only its entry is left
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _cell_pids(grid: Path) -> list[int]:
    pids = []
    for lock in grid.glob("*/.lock"):
        try:
            pids.append(json.loads(lock.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            pass
    return pids


def test_stopping_a_grid_with_jobs_stops_its_cell_processes(tmp_path):
    import yaml

    tree = {"base": str(ROOT / "configs" / "scenes_quick.yaml"), "out_dir": str(tmp_path / "grid"),
            "overrides": [*TINY, "train.steps=100000", "train.epochs=1000", "train.log_every=1000"],
            "grid": {"train.seed": [0, 1]}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    grid = subprocess.Popen([sys.executable, "-m", "bayesncl_pyro.cli.ablate", str(tmp_path / "grid.yaml"),
                             "--jobs", "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        while len(pids := _cell_pids(tmp_path / "grid")) < 2 and time.monotonic() < deadline:
            assert grid.poll() is None, grid.communicate()
            time.sleep(0.5)
        assert len(pids) == 2, "the cells did not start"
        grid.send_signal(signal.SIGTERM)
        grid.wait(timeout=120)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in pids), "a cell process outlived its grid"
        assert grid.returncode == 130
    finally:
        if grid.poll() is None:
            grid.kill()
        for pid in _cell_pids(tmp_path / "grid"):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_sigterm_while_a_command_exits_is_ignored_quietly(tmp_path):
    script = textwrap.dedent("""
        import atexit, os, signal, time
        from bayesncl_pyro.cli.guard import guarded

        def late():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)

        @guarded
        def main(argv=None):
            atexit.register(late)
            print("done")
            return 0

        main()
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert done.stdout.strip() == "done" and "Exception ignored" not in done.stderr, done.stderr


# --- the feature browser's output directory -------------------------------------------------------

def test_a_full_disk_while_writing_the_browser_names_the_site_and_the_free_space(tmp_path):
    import errno

    from bayesncl_pyro.browser.site_directory import replace_directory
    from bayesncl_pyro.config.errors import StorageError

    def fill(directory: Path) -> None:
        (directory / "index.html").write_text("<html>")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StorageError) as caught:
        replace_directory(tmp_path / "browser", fill)
    message = str(caught.value)
    assert str(tmp_path / "browser") in message and "no space left" in message and "free on" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_temporary_directories_of_a_killed_browse_are_removed_by_the_next_one(tmp_path):
    import fcntl

    from bayesncl_pyro.browser.site_directory import MARKER, replace_directory

    stale, young, held = (tmp_path / f".browser.{tag}.tmp" for tag in ("stale001", "young001", "held0001"))
    old = tmp_path / ".browser.stale002.old"
    for directory in (stale, young, held, old):
        (directory / "data").mkdir(parents=True)
    for directory in (stale, held, old):
        os.utime(directory, (time.time() - 3600, time.time() - 3600))
    holder = os.open(held, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # a build still running
    try:
        def fill(directory: Path) -> None:
            (directory / MARKER).parent.mkdir()
            (directory / MARKER).write_text("site")

        replace_directory(tmp_path / "browser", fill)
    finally:
        os.close(holder)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["browser", young.name, held.name])


def test_a_killed_browse_leaves_nothing_behind_that_the_next_one_keeps(tmp_path):
    """A real process killed with SIGKILL while filling its temporary directory."""
    script = textwrap.dedent(f"""
        import os, signal, time
        from pathlib import Path
        from bayesncl_pyro.browser.site_directory import replace_directory

        def fill(directory):
            (directory / "index.html").write_text("<html>")
            os.kill(os.getpid(), signal.SIGKILL)

        replace_directory(Path({str(tmp_path / "browser")!r}), fill)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".browser.")]
    assert len(left) == 1 and left[0].name.endswith(".tmp")
    os.utime(left[0], (time.time() - 3600, time.time() - 3600))

    from bayesncl_pyro.browser.site_directory import MARKER, replace_directory

    def fill(directory: Path) -> None:
        (directory / MARKER).parent.mkdir()
        (directory / MARKER).write_text("site")

    replace_directory(tmp_path / "browser", fill)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["browser"]


def test_a_lock_file_that_is_a_hard_link_is_refused(tmp_path, capsys):
    _, victim, line = _train_over_a_linked_lock(tmp_path, capsys, os.link)
    assert "hard link" in line
    assert victim.read_text() == "keep me\n"
