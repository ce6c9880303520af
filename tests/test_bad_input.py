"""Bad input through the command line: one clear line naming the key or file and what is allowed,
exit code 2, and nothing written to an existing run directory."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from bayesncl_pyro.cli.train import main as train_main

from .conftest import ROOT, TINY


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _image_tree(root: Path, classes: list[str], per_class: int = 2, corrupt: str | None = None) -> Path:
    for split in ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
        for c in classes:
            (root / split / c).mkdir(exist_ok=True)
            for i in range(per_class):
                write_png(torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8), str(root / split / c / f"{i}.png"))
    if corrupt:
        (root / "train" / classes[0] / corrupt).write_bytes(b"\x89PNG this is not an image")
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_input")
    run = base / "run"
    assert train_main(["--config", str(ROOT / "configs/scenes_quick.yaml"), "--no-progress", *TINY,
                       "train.steps=2", f"train.out_dir={run}"]) == 0
    foreign = base / "foreign_version"
    shutil.copytree(run, foreign)
    envelope = torch.load(foreign / "last.pt", weights_only=True)
    envelope["format_version"] = 99
    torch.save(envelope, foreign / "last.pt")
    truncated = base / "truncated"
    shutil.copytree(run, truncated)
    data = (truncated / "last.pt").read_bytes()
    (truncated / "last.pt").write_bytes(data[: len(data) // 3])
    (base / "notarun").mkdir()
    (base / "empty" / "train").mkdir(parents=True)
    (base / "empty" / "test").mkdir(parents=True)
    _image_tree(base / "oneclass", ["cat"])
    _image_tree(base / "corrupt", ["cat", "dog"], corrupt="broken.png")
    (base / "list.yaml").write_text("- 1\n- 2\n")
    return {"base": base, "run": run, "foreign": foreign, "truncated": truncated}


def _config_case(*overrides: str):
    return ("config", list(overrides))


CASES = {
    "unknown section": (["nothing.here=1"], ["nothing"]),
    "unknown key": (["gate.rho=0.5"], ["gate.rho", "prior_prob"]),
    "rho zero": (["gate.prior_prob=0"], ["gate.prior_prob", "(0, 1)"]),
    "rho above one": (["gate.prior_prob=1.2"], ["gate.prior_prob", "(0, 1)"]),
    "negative lambda": (["gate.kl_weight=-0.1"], ["gate.kl_weight", ">= 0"]),
    "threshold zero": (["gate.threshold=0"], ["gate.threshold", "(0, 1)"]),
    "gate temperature": (["gate.temperature=-1"], ["gate.temperature", "> 0"]),
    "tau zero": (["model.temperature=0"], ["model.temperature", "> 0"]),
    "relax temperature": (["gate.relax_temperature=0"], ["gate.relax_temperature", "> 0"]),
    "batch of one": (["data.batch_size=1"], ["data.batch_size", ">= 2"]),
    "negative lr": (["optim.lr=-0.4"], ["optim.lr", "> 0"]),
    "gate lr zero": (["optim.gate_lr=0"], ["optim.gate_lr", "> 0"]),
    "batch not a number": (["data.batch_size=many"], ["data.batch_size", "integer"]),
    "fractional epochs": (["train.epochs=2.5"], ["train.epochs", "integer"]),
    "boolean": (["data.download=perhaps"], ["data.download", "true or false"]),
    "unknown prior": (["gate.prior=gaussian"], ["gate.prior", "bernoulli"]),
    "unknown estimator": (["gate.estimator=reinforce"], ["gate.estimator", "ste"]),
    "unknown nonneg": (["model.nonneg=tanh"], ["model.nonneg", "relu"]),
    "unknown backbone": (["model.backbone=vgg16"], ["model.backbone", "convnet"]),
    "unknown device": (["train.device=tpu"], ["train.device", "cuda"]),
    "missing cuda device": (["train.device=cuda:99"], ["train.device", "cuda:99"]),
    "precision": (["train.precision=8"], ["train.precision", "bf16"]),
    "scenes classes": (["data.scenes.num_classes=11"], ["data.scenes.num_classes", "2 to 10"]),
    "augment probability": (["data.augment.gray_prob=2"], ["data.augment.gray_prob", "[0, 1]"]),
    "override without value": (["optim.lr"], ["optim.lr", "key=value"]),
    "missing data dir": (["data.name=imagefolder", "data.root={base}/missing"], ["missing", "does not exist"]),
    "empty data dir": (["data.name=imagefolder", "data.root={base}/empty"], ["empty"]),
    "one class": (["data.name=imagefolder", "data.root={base}/oneclass"], ["oneclass", "at least 2 classes"]),
    "corrupt image": (["data.name=imagefolder", "data.root={base}/corrupt"], ["broken.png", "skip_corrupt"]),
    "existing run": ([], ["already holds a run", "--resume"]),
}

RESUME_CASES = {
    "resume into a non-run": (["--resume", "{base}/notarun"], ["notarun", "does not hold a run"]),
    "resume with another architecture": (["--resume", "{run}", "model.proj_dim=24"], ["model.proj_dim", "24"]),
    "checkpoint of another version": (["--resume", "{foreign}"], ["format version", "99"]),
    "truncated checkpoint": (["--resume", "{truncated}"], ["last.pt", "cannot be read"]),
    "missing config file": (["--config", "{base}/nope.yaml"], ["nope.yaml", "does not exist"]),
    "config not a mapping": (["--config", "{base}/list.yaml"], ["list.yaml", "mapping"]),
}


def _check(world, argv, expected, capsys):
    before = {name: _snapshot(world[name]) for name in ("run", "foreign", "truncated")}
    code = train_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    for fragment in expected:
        assert fragment in err[0], (fragment, err[0])
    for name, snap in before.items():
        assert _snapshot(world[name]) == snap, f"{name} changed"


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_or_data(world, case, capsys):
    overrides, expected = CASES[case]
    fmt = {k: str(v) for k, v in world.items()}
    argv = ["--config", str(ROOT / "configs/scenes_quick.yaml"), "--no-progress", *TINY,
            f"train.out_dir={world['run']}", *[o.format(**fmt) for o in overrides]]
    _check(world, argv, expected, capsys)


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_bad_resume_or_file(world, case, capsys):
    argv, expected = RESUME_CASES[case]
    fmt = {k: str(v) for k, v in world.items()}
    _check(world, ["--no-progress", *[a.format(**fmt) for a in argv]], expected, capsys)


def test_table_is_large_enough():
    assert len(CASES) + len(RESUME_CASES) >= 25
