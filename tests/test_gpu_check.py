"""scripts/gpu_check.sh --cpu-dry-run: every step of the GPU check runs on CPU at tiny sizes,
including unpacking the CIFAR-10 archive (an archive of the same layout here, with more images
per class than the dry run trains on), and the table it prints and writes has a row per step,
each passed. Whatever the data root holds, the dry run trains on 8 images per class (4 per test
class) for at most 4 steps."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import numpy as np
from PIL import Image

from .conftest import ROOT

ROWS = ("CUDA tests (pytest -m cuda)", "bench_step.py: Pyro / plain step time", "throughput fp32",
        "throughput bf16", "throughput bf16 + compile", "one-epoch BayesNCL run (CIFAR-10 JPEG copy)",
        "bayesncl-eval of that run")
FEED_ROW = "data feed: store vs in-memory tensor"


TRAIN_PER_CLASS, TEST_PER_CLASS = 300, 30
"""Images per class in the test's archive: more than the dry run's cut (8 and 4)."""


def tiny_archive(tmp_path):
    """An ImageFolder archive laid out like cifar10-jpeg.tar.gz: train/<class>/*.jpg, test/<class>/*.jpg."""
    rng = np.random.default_rng(0)
    tree = tmp_path / "tree"
    for split, count in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        for c in range(10):
            folder = tree / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:04d}.jpg",
                                                                                       quality=50)
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(tree / split, arcname=split)
    return archive


def test_gpu_check_dry_run_prints_and_writes_a_row_per_step(tmp_path):
    archive, data, table = tiny_archive(tmp_path), tmp_path / "data", tmp_path / "out" / "gpu_check.md"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--cpu-dry-run", "--archive", str(archive),
                           "--data-root", str(data), "--work", str(tmp_path / "work"), "--out", str(table)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(list((data / "train" / "class0").iterdir())) == TRAIN_PER_CLASS  # unpacked from the archive
    cut = tmp_path / "work" / "dry_run_data"  # the dry run's data: the first files of each class, linked
    assert sorted(p.name for p in (cut / "train" / "class3").iterdir()) == [f"{i:04d}.jpg" for i in range(8)]
    assert len(list((cut / "test" / "class9").iterdir())) == 4
    run = tmp_path / "work" / "cifar10_one_epoch"
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
    evaluated = json.loads((run / "eval.json").read_text())
    assert (evaluated["num_train"], evaluated["num_test"]) == (80, 40)
    written = table.read_text()
    assert written.strip() in done.stdout
    rows = {line.split(" | ")[0].lstrip("| "): line for line in written.splitlines() if line.startswith("| ")}
    for name in ROWS:
        assert name in rows, name
        cells = [c.strip() for c in rows[name].strip("|").split("|")]
        assert cells[3] == "ok" and cells[1] not in ("", "–") and "unreadable" not in cells[1], rows[name]
    assert "images/s" in rows["throughput bf16 + compile"] and "ratio" in rows[ROWS[1]]
    assert "linear top-1" in rows[ROWS[6]] and "probe converged" in rows[ROWS[6]]
    assert rows[FEED_ROW].split("|")[4].strip() == "ok" and "ratio" in rows[FEED_ROW]


def test_gpu_check_names_an_unknown_option():
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--fast"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "--fast" in done.stderr and "--cpu-dry-run" in done.stderr
