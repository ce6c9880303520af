"""Processes that share one suite: the lock around unpacking and around the tables waits for its
holder (and says so), and a dataset unpacked while a process waited is not unpacked again."""
from __future__ import annotations

import errno
import io
import os
import tarfile
import threading
import time

import pytest
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


def test_the_holder_is_recorded_and_named_to_a_waiting_process(tmp_path, capsys):
    lock = tmp_path / "x.lock"
    seen: list[str] = []

    def second():
        with exclusive(lock, "reading", record_holder=True):
            seen.append(lock.read_text())

    with exclusive(lock, "writing", record_holder=True) as fd:
        assert fd >= 0 and lock.read_text() == f"{os.getpid()}\n"
        lock.write_text("4242\n")  # as if another process held it
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        assert not seen
    thread.join(timeout=10)
    assert seen == [f"{os.getpid()}\n"]  # the new holder replaced the old id
    assert f"waiting for the lock {lock}: another process (pid 4242) is reading" in capsys.readouterr().err


def test_without_locks_the_body_runs_unlocked_unless_refused(tmp_path, monkeypatch):
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with exclusive(tmp_path / "a.lock", "writing") as fd:
        assert fd == -1
    with pytest.raises(RuntimeError, match=f"the file system of {tmp_path / 'b.lock'} does not support locks "
                                           r"\(No locks available\): processes writing at once"):
        with exclusive(tmp_path / "b.lock", "writing", refuse_unlocked=RuntimeError):
            raise AssertionError("the body ran unlocked")
