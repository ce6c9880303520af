"""Processes that share one suite: the lock around unpacking and around the tables waits for its
holder (and says so), and a dataset unpacked while a process waited is not unpacked again."""
from __future__ import annotations

import io
import tarfile
import threading
import time

import yaml

from bayesncl_pyro.experiments.suite import load_suite, prepare_inputs
from bayesncl_pyro.storage.shared_lock import exclusive


def test_a_second_holder_waits_for_the_first_and_says_why(tmp_path, capsys):
    lock = tmp_path / "x.lock"
    order: list[str] = []

    def second():
        with exclusive(lock, "doing the second thing"):
            order.append("second")

    with exclusive(lock, "doing the first thing"):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        order.append("first done")
    thread.join(timeout=10)
    assert order == ["first done", "second"]
    assert f"waiting for the lock {lock}: another process is doing the second thing" in capsys.readouterr().err


def test_an_archive_unpacked_while_waiting_is_not_unpacked_again(tmp_path):
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        payload = b"image bytes"
        info = tarfile.TarInfo("train/a/0.jpg")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    into = tmp_path / "unpacked"
    spec_path = tmp_path / "suite.yaml"
    spec_path.write_text(yaml.safe_dump({"prepare": [{"archive": str(archive), "into": str(into)}],
                                         "datasets": {"scenes": ["data.name=scenes"]},
                                         "methods": {"ncl": ["gate.prior=none"]}}))
    spec = load_suite(spec_path)
    done = threading.Event()
    worker = threading.Thread(target=lambda: (prepare_inputs(spec), done.set()))
    with exclusive(into.with_name(into.name + ".lock"), "unpacking"):
        worker.start()
        time.sleep(0.5)
        assert not done.is_set()  # it waits for the holder
        into.mkdir()  # what the holder unpacked
        (into / "marker").write_text("first")
    worker.join(timeout=10)
    assert done.is_set() and sorted(p.name for p in into.iterdir()) == ["marker"]
    assert not into.with_name(into.name + ".partial").exists()
    other = tmp_path / "fresh"
    spec_path.write_text(yaml.safe_dump({"prepare": [{"archive": str(archive), "into": str(other)}],
                                         "datasets": {"scenes": ["data.name=scenes"]},
                                         "methods": {"ncl": ["gate.prior=none"]}}))
    prepare_inputs(load_suite(spec_path))
    assert (other / "train/a/0.jpg").read_bytes() == b"image bytes"
