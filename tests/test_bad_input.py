"""Bad input through the command line: one clear line naming the key or file and what is allowed,
exit code 2, nothing written to an existing run directory, and no code run from a file.

One table, :data:`CASES`: each row is a command, its arguments (``{name}`` stands for a path of
the ``world`` fixture) and the fragments its error line must hold. Most rows call the command's
``main`` in this process (argv in, exit code and stderr out: what the console script runs);
rows marked ``process`` run it as a real process, for failures only an operating system gives: a
read-only directory (in a user namespace, so that root is refused too) and a file size limit.
"""
from __future__ import annotations

import hashlib
import os
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from bayesncl_pyro.cli.evaluate import main as eval_main
from bayesncl_pyro.cli.inspect_gates import main as inspect_main
from bayesncl_pyro.cli.report import main as report_main
from bayesncl_pyro.cli.train import main as train_main
from bayesncl_pyro.storage import checkpoints
from bayesncl_pyro.storage.run_directory import lock_run

from .conftest import ROOT, TINY, tiny_run

MAINS = {"train": train_main, "eval": eval_main, "inspect": inspect_main, "report": report_main}
MODULES = {"train": "bayesncl_pyro.train", "eval": "bayesncl_pyro.cli.evaluate"}
FRESH = ["--config", str(ROOT / "configs/scenes_quick.yaml"), "--no-progress", *TINY]


@dataclass
class Case:
    command: str
    argv: list[str]
    expected: list[str]
    process: str | None = None  # "read-only": in a user namespace; "file size": under RLIMIT_FSIZE
    extra: dict = field(default_factory=dict)


def fresh(*overrides: str, out: str = "{run}") -> list[str]:
    return [*FRESH, f"train.out_dir={out}", *overrides]


class Hostile:
    """Unpickling this opens (creates) the marker file: what a malicious checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


CASES = {
    # --- config values ---
    "unknown section": Case("train", fresh("nothing.here=1"), ["nothing"]),
    "unknown key": Case("train", fresh("gate.rho=0.5"), ["gate.rho", "prior_prob"]),
    "rho zero": Case("train", fresh("gate.prior_prob=0"), ["gate.prior_prob", "(0, 1)"]),
    "rho above one": Case("train", fresh("gate.prior_prob=1.2"), ["gate.prior_prob", "(0, 1)"]),
    "negative lambda": Case("train", fresh("gate.kl_weight=-0.1"), ["gate.kl_weight", ">= 0"]),
    "threshold zero": Case("train", fresh("gate.threshold=0"), ["gate.threshold", "(0, 1)"]),
    "gate temperature": Case("train", fresh("gate.temperature=-1"), ["gate.temperature", "> 0"]),
    "tau zero": Case("train", fresh("model.temperature=0"), ["model.temperature", "> 0"]),
    "relax temperature": Case("train", fresh("gate.relax_temperature=0"), ["gate.relax_temperature", "> 0"]),
    "batch of one": Case("train", fresh("data.batch_size=1"), ["data.batch_size", ">= 2"]),
    "negative lr": Case("train", fresh("optim.lr=-0.4"), ["optim.lr", "> 0"]),
    "gate lr zero": Case("train", fresh("optim.gate_lr=0"), ["optim.gate_lr", "> 0"]),
    "batch not a number": Case("train", fresh("data.batch_size=many"), ["data.batch_size", "integer"]),
    "fractional epochs": Case("train", fresh("train.epochs=2.5"), ["train.epochs", "integer"]),
    "boolean": Case("train", fresh("data.download=perhaps"), ["data.download", "true or false"]),
    "unknown prior": Case("train", fresh("gate.prior=gaussian"), ["gate.prior", "bernoulli"]),
    "unknown estimator": Case("train", fresh("gate.estimator=reinforce"), ["gate.estimator", "ste"]),
    "unknown nonneg": Case("train", fresh("model.nonneg=tanh"), ["model.nonneg", "relu"]),
    "unknown backbone": Case("train", fresh("model.backbone=vgg16"), ["model.backbone", "convnet"]),
    "unknown device": Case("train", fresh("train.device=tpu"), ["train.device", "cuda"]),
    "missing cuda device": Case("train", fresh("train.device=cuda:99"), ["train.device", "cuda:99"]),
    "precision": Case("train", fresh("train.precision=8"), ["train.precision", "bf16"]),
    "scenes classes": Case("train", fresh("data.scenes.num_classes=11"), ["data.scenes.num_classes", "2 to 10"]),
    "augment probability": Case("train", fresh("data.augment.gray_prob=2"), ["data.augment.gray_prob", "[0, 1]"]),
    "override without value": Case("train", fresh("optim.lr"), ["optim.lr", "key=value"]),
    "seed too large for numpy": Case("train", fresh("train.seed=4294967296"), ["train.seed", "4294967295"]),
    "negative seed": Case("train", fresh("train.seed=-1"), ["train.seed", "from 0 to"]),
    "inspect seed out of range": Case("inspect", ["{run}", "--seed", "4294967296"], ["--seed", "4294967295"]),
    "a huge value stays a short message": Case("train", fresh("data.name=" + "x" * 20000), ["data.name", "… (cut; 20002 characters in all)"]),
    "a huge key stays a short message": Case("train", fresh("y" * 20000 + "=1"), ["unknown config key", "… (cut;"]),
    "unknown option": Case("train", [*FRESH, "--no-such-option"], ["--no-such-option", "--help"]),
    # --- config files ---
    "missing config file": Case("train", ["--config", "{base}/nope.yaml"], ["nope.yaml", "does not exist"]),
    "config not a mapping": Case("train", ["--config", "{base}/list.yaml"], ["list.yaml", "mapping"]),
    "config not UTF-8": Case("train", ["--config", "{base}/latin1.yaml"], ["latin1.yaml", "not UTF-8", "0xe9"]),
    "config is a directory": Case("train", ["--config", "{base}"], ["is not a file"]),
    "duplicated section": Case("train", ["--config", "{base}/twice.yaml"], ["twice.yaml", "'train' appears twice",
                                                                           "lines 1 and 5"]),
    "duplicated nested key": Case("train", ["--config", "{base}/nested.yaml"], ["'lr' appears twice", "lines 2 and 3"]),
    "--config with --resume": Case("train", ["--config", "{base}/list.yaml", "--resume", "{run}"],
                                   ["--config cannot be combined with --resume"]),
    # --- data ---
    "missing data dir": Case("train", fresh("data.name=imagefolder", "data.root={base}/missing"),
                             ["missing", "does not exist"]),
    "empty data dir": Case("train", fresh("data.name=imagefolder", "data.root={base}/empty"), ["empty"]),
    "one class": Case("train", fresh("data.name=imagefolder", "data.root={base}/oneclass"),
                      ["oneclass", "at least 2 classes"]),
    "corrupt image": Case("train", fresh("data.name=imagefolder", "data.root={base}/corrupt"),
                          ["broken.png", "data.skip_corrupt=true"]),
    "train and test classes differ": Case("train", fresh("data.name=imagefolder", "data.root={base}/mismatch"),
                                          ["different class folders", "only in train: bird", "only in test: fox"]),
    "one file in two class folders": Case("train", fresh("data.name=imagefolder", "data.root={base}/twoclasses"),
                                          ["same file", "'cat' and 'dog'"]),
    # --- run directories and output paths ---
    "existing run": Case("train", fresh(), ["already holds a run", "--resume"]),
    "files of a run without its config": Case("train", fresh(out="{leftovers}"),
                                              ["holds files of another run", "metrics.jsonl"]),
    "out_dir is a file": Case("train", fresh(out="{base}/list.yaml"), ["list.yaml is a file, not a directory"]),
    "out_dir under a file": Case("train", fresh(out="{base}/list.yaml/run"), ["list.yaml is a file, not a directory"]),
    "out_dir is read-only": Case("train", fresh(out="{readonly}/run"), ["readonly", "permission denied"],
                                 process="read-only"),
    "file size limit": Case("train", fresh(out="{base}/limited"), ["last.pt", "file size limit"],
                            process="file size"),
    "run directory in use": Case("train", ["--resume", "{locked}", "--no-progress"],
                                 ["in use", f"process {os.getpid()}", "--resume"]),
    "fresh run into a directory in use": Case("train", fresh(out="{locked}"), ["in use", f"process {os.getpid()}"]),
    "report of a truncated eval.json": Case("report", ["{truncated_json}", "--out", "{base}/r.html"],
                                            ["eval.json", "truncated or damaged"]),
    "report of a damaged metrics log": Case("report", ["{damaged_log}", "--out", "{base}/r.html"],
                                            ["metrics.jsonl", "line 2 is not JSON"]),
    "report output under a file": Case("report", ["{run}", "--out", "{base}/list.yaml/r.html"],
                                       ["list.yaml is a file"]),
    # --- checkpoints: resume ---
    "resume into a non-run": Case("train", ["--resume", "{base}/notarun"], ["notarun", "does not hold a run"]),
    "resume with another architecture": Case("train", ["--resume", "{run}", "model.proj_dim=24"],
                                             ["model.proj_dim", "24"]),
    "checkpoint of another version": Case("train", ["--resume", "{foreign}"], ["format version", "99"]),
    "checkpoint of the old format": Case("train", ["--resume", "{old_format}"], ["older version", "format 1"]),
    "truncated checkpoint": Case("train", ["--resume", "{truncated}"],
                                 ["last.pt", "cannot be read", "no intact checkpoint"]),
    "zero-byte checkpoint": Case("train", ["--resume", "{empty_checkpoint}"], ["last.pt", "empty (0 bytes)"]),
    "checkpoint missing a field": Case("train", ["--resume", "{no_optimizer}"], ["lacks the field 'optimizer'"]),
    "hostile checkpoint (resume)": Case("train", ["--resume", "{hostile}"], ["last.pt", "could run code"]),
    "hostile payload with a valid checksum": Case("train", ["--resume", "{hostile_payload}"],
                                                  ["last.pt", "could run code"]),
    # --- checkpoints: evaluation and inspection ---
    "hostile checkpoint (eval)": Case("eval", ["{hostile}", "--no-progress"], ["last.pt", "could run code"]),
    "hostile checkpoint (inspect)": Case("inspect", ["{hostile}", "--no-progress"], ["last.pt", "could run code"]),
    "non-finite buffer (eval)": Case("eval", ["{nonfinite}", "--no-progress"],
                                     ["NaN or infinite", "running_var", "not evaluated"]),
    "non-finite buffer (inspect)": Case("inspect", ["{nonfinite}", "--no-progress"], ["NaN or infinite"]),
    "damaged last.pt names the intact one (eval)": Case("eval", ["{flipped}", "--no-progress"],
                                                        ["last.pt", "newest intact checkpoint", "epoch_0001.pt (step 8)"]),
}


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _image_tree(root: Path, classes: dict[str, list[str]] | list[str], per_class: int = 2,
                corrupt: str | None = None) -> Path:
    by_split = classes if isinstance(classes, dict) else {"train": classes, "test": classes}
    for split, names in by_split.items():
        for c in names:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                write_png(torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8), str(root / split / c / f"{i}.png"))
    if corrupt:
        (root / "train" / by_split["train"][0] / corrupt).write_bytes(b"\x89PNG this is not an image")
    return root


def _rewrite(run: Path, change) -> None:
    """Apply ``change`` to the state of ``run/last.pt`` and write it back with a valid checksum."""
    state = checkpoints.read(run / "last.pt")
    change(state)
    (run / "last.pt").write_bytes(checkpoints.encode(state))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_input")
    run = tiny_run(tmp_path_factory, "run")
    paths = {"base": base, "run": run, "marker": base / "code-ran"}

    def copy(name: str, source: Path = run) -> Path:
        paths[name] = base / name
        shutil.copytree(source, paths[name])
        return paths[name]

    envelope = torch.load(copy("foreign") / "last.pt", weights_only=True)
    envelope["format_version"] = 99
    torch.save(envelope, paths["foreign"] / "last.pt")
    old = checkpoints.read(copy("old_format") / "last.pt")
    torch.save(old, paths["old_format"] / "last.pt")
    data = (copy("truncated") / "last.pt").read_bytes()
    (paths["truncated"] / "last.pt").write_bytes(data[: len(data) // 3])
    (copy("empty_checkpoint") / "last.pt").write_bytes(b"")
    _rewrite(copy("no_optimizer"), lambda state: state.pop("optimizer"))
    torch.save(Hostile(paths["marker"]), copy("hostile") / "last.pt")
    hostile_state = {**checkpoints.read(run / "last.pt"), "extra": Hostile(paths["marker"])}
    (copy("hostile_payload") / "last.pt").write_bytes(checkpoints.encode(hostile_state))

    def poison(state):
        name = next(k for k in state["modules"]["net"] if k.endswith("running_var"))
        state["modules"]["net"][name][0] = float("nan")

    _rewrite(copy("nonfinite"), poison)
    epochs = tiny_run(tmp_path_factory, "epochs", "train.steps=8")  # one epoch: epoch_0001.pt
    data = bytearray((copy("flipped", epochs) / "last.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (paths["flipped"] / "last.pt").write_bytes(bytes(data))
    (copy("truncated_json") / "eval.json").write_text('{"linear_probe": {"top1": 41.')
    log = (copy("damaged_log") / "metrics.jsonl").read_text().splitlines(keepends=True)
    (paths["damaged_log"] / "metrics.jsonl").write_text(log[0] + log[1][:10] + "\n" + "".join(log[2:]))
    (base / "leftovers").mkdir()
    shutil.copy(run / "metrics.jsonl", base / "leftovers" / "metrics.jsonl")
    paths["leftovers"] = base / "leftovers"
    copy("locked")
    lock = lock_run(paths["locked"])
    (base / "notarun").mkdir()
    (base / "empty" / "train").mkdir(parents=True)
    (base / "empty" / "test").mkdir(parents=True)
    _image_tree(base / "oneclass", ["cat"])
    _image_tree(base / "corrupt", ["cat", "dog"], corrupt="broken.png")
    _image_tree(base / "mismatch", {"train": ["bird", "cat", "dog"], "test": ["cat", "dog", "fox"]})
    _image_tree(base / "twoclasses", ["cat", "dog"])
    os.symlink(base / "twoclasses/train/cat/0.png", base / "twoclasses/train/dog/cat.png")
    (base / "list.yaml").write_text("- 1\n- 2\n")
    (base / "latin1.yaml").write_bytes("train:\n  out_dir: caf\xe9\n".encode("latin-1"))
    (base / "twice.yaml").write_text("train:\n  seed: 1\nmodel:\n  proj_dim: 16\ntrain:\n  epochs: 2\n")
    (base / "nested.yaml").write_text("optim:\n  lr: 0.1\n  lr: 0.2\n")
    paths["readonly"] = base / "readonly"
    paths["readonly"].mkdir(mode=0o555)
    yield paths
    lock.release()


def _watched(world) -> list[Path]:
    return [p for p in world.values() if isinstance(p, Path) and p.is_dir() and (p / "config.yaml").is_file()]


def _in_process(command: str, argv: list[str], capsys) -> tuple[int, list[str]]:
    code = MAINS[command](argv)
    return code, capsys.readouterr().err.strip().splitlines()


def _as_process(case: Case, argv: list[str]) -> tuple[int, list[str]]:
    command = [sys.executable, "-m", MODULES[case.command], *argv]
    preexec = None
    if case.process == "read-only":
        if shutil.which("unshare") is None:
            pytest.skip("needs unshare(1) to be refused a write as a user without privileges")
        # uid 0 outside the namespace is not root inside it: the directory's mode applies
        command = ["unshare", "--user", "--map-user=1000", "--map-group=1000", *command]
    elif case.process == "file size":
        def preexec():
            resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240, preexec_fn=preexec,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if case.process == "read-only" and "unshare" in done.stderr and done.returncode != 2:
        pytest.skip(f"user namespaces are not available here: {done.stderr.strip()[:200]}")
    return done.returncode, done.stderr.strip().splitlines()


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(world, name, capsys):
    case = CASES[name]
    fmt = {k: str(v) for k, v in world.items()}
    argv = [a.format(**fmt) for a in case.argv]
    before = {p: _snapshot(p) for p in _watched(world)}
    code, err = _as_process(case, argv) if case.process else _in_process(case.command, argv, capsys)
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert len(err[0]) < 800, err[0]
    for fragment in case.expected:
        assert fragment in err[0], (fragment, err[0])
    for path, snap in before.items():
        assert _snapshot(path) == snap, f"{path} changed"
    assert not world["marker"].exists(), "loading a checkpoint ran code"


def test_table_is_large_enough():
    assert len(CASES) >= 60

