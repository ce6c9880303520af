"""The checkpoint file format: plain data read with weights_only (no code runs on load), a
checksum over the payload, exact round trip of the RNG states, one-line errors for damaged,
old-format and hostile files."""
from __future__ import annotations

import pickle
import random
import shutil

import numpy as np
import pytest
import torch

from bayesncl_pyro.config.errors import CheckpointError
from bayesncl_pyro.storage import checkpoints

from .conftest import tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory, "checkpoint_run")


def test_the_file_is_plain_data_with_a_matching_checksum(run):
    envelope = torch.load(run / "last.pt", weights_only=True)
    assert envelope["format"] == checkpoints.FORMAT and envelope["format_version"] == checkpoints.FORMAT_VERSION
    import hashlib

    assert hashlib.sha256(envelope["payload"]).hexdigest() == envelope["sha256"]
    state = checkpoints.read(run / "last.pt")
    assert state["step"] == 4 and set(state["modules"]) == {"net", "classifier"}
    assert set(state["rng"]["generators"]) == {"augment"}


def test_rng_states_round_trip_exactly():
    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    generator = torch.Generator().manual_seed(6)
    saved = torch.load(__import__("io").BytesIO(checkpoints.encode({"rng": checkpoints.rng_state({"g": generator})})),
                       weights_only=True)
    state = torch.load(__import__("io").BytesIO(saved["payload"]), weights_only=True)["rng"]
    expected = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=generator))
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    generator.manual_seed(0)
    checkpoints.set_rng_state(state, {"g": generator})
    again = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=generator))
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2] and torch.equal(expected[3], again[3])


@pytest.mark.parametrize("damage,message", [
    (lambda data: b"", "is empty"),
    (lambda data: data[: len(data) // 2], "is damaged .truncated or corrupted. or not a checkpoint"),
    (lambda data: data[:-4000] + bytes([data[-4000] ^ 0x01]) + data[-3999:], "checksum does not match"),
])
def test_damaged_files_are_named_in_one_line(run, tmp_path, damage, message):
    path = tmp_path / "last.pt"
    path.write_bytes(damage((run / "last.pt").read_bytes()))
    with pytest.raises(CheckpointError, match=message) as info:
        checkpoints.read(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


class _Hostile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    target = tmp_path / "created_by_the_checkpoint"
    path = tmp_path / "last.pt"
    torch.save({"format_version": 2, "modules": _Hostile(target)}, path)
    with pytest.raises(CheckpointError, match="not loaded"):
        checkpoints.read(path)
    assert not target.exists()


def test_an_old_format_checkpoint_gets_a_clear_message(run, tmp_path):
    state = checkpoints.read(run / "last.pt")
    state["rng"]["numpy"] = np.random.get_state()  # what format 1 stored: numpy arrays, pickled
    state["format_version"] = 1
    path = tmp_path / "last.pt"
    with open(path, "wb") as handle:
        torch.save(state, handle, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="older version"):
        checkpoints.read(path)
    shutil.copy(run / "last.pt", path)
    assert checkpoints.read(path)["step"] == 4


def test_every_torch_load_in_the_package_is_weights_only():
    """No file a user can hand over is unpickled with code: each ``torch.load`` of the package
    passes ``weights_only=True`` (checkpoints go through ``checkpoints.read``; image caches and
    ``model.weights`` files take the same flag)."""
    import ast
    from pathlib import Path

    import bayesncl_pyro

    calls = []
    for path in Path(bayesncl_pyro.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                flags = {k.arg: k.value for k in node.keywords}
                safe = isinstance(flags.get("weights_only"), ast.Constant) and flags["weights_only"].value is True
                calls.append((path.name, node.lineno, safe))
    assert calls and all(safe for *_, safe in calls), calls
    assert {"checkpoints.py", "vision.py"} <= {name for name, *_ in calls}
