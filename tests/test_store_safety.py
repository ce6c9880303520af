"""Nothing lost, nothing hung, nothing unbounded on the store path: outputs never replace a user's
files, a killed decode leaves no worker behind, a full disk is one line, FIFOs and devices are
refused, the pixel limit bounds what is decoded, writes follow no link, what a store or cache
says is checked against its listing."""
from __future__ import annotations

import errno
import fcntl
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bayesncl_pyro.data.imagefolder_store as imagefolder_store
import bayesncl_pyro.storage.allocation as allocation
from bayesncl_pyro.browser.site_directory import check_replaceable as check_site
from bayesncl_pyro.cli import prepare, report
from bayesncl_pyro.config import load_config
from bayesncl_pyro.config.errors import CheckpointError, ConfigError, DataError, StorageError
from bayesncl_pyro.data.image_input import decode_image_file
from bayesncl_pyro.data.image_store import LABELS, MANIFEST, PIXELS, create_store
from bayesncl_pyro.data.imagefolder_store import fit, listing_of, load_imagefolder_store, store_folder
from bayesncl_pyro.data.vision import _list_imagefolder, load_imagefolder
from bayesncl_pyro.storage import checkpoints
from bayesncl_pyro.storage.run_directory import write_config

from .conftest import ROOT

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
)


def png_tree(root: Path, per_class: int = 3) -> Path:
    """Small PNGs of two classes in root/{train,test}/<class>/."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("a", "b"):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                Image.fromarray(rng.integers(0, 256, (12, 14 + k, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    return root


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- outputs never replace a user's files ---------------------------------------------------------


def test_bench_store_deletes_only_what_it_wrote_even_on_failure(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("keep me")
    (work / "jpeg").mkdir()  # a name the benchmark uses inside its own folder
    new = tmp_path / "new" / "deeper"
    for given in (work, new):  # --jpegs 0: the decode part fails on an empty tree
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_store.py"), "--parts", "decode",
                               "--jpegs", "0", "--work", str(given)], capture_output=True, text=True, timeout=300)
        assert done.returncode != 0 and "holds no images" in done.stderr
    assert sorted(p.name for p in work.iterdir()) == ["jpeg", "notes.txt"]
    assert (work / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]  # the folders it created, removed again


def test_report_out_refuses_a_file_that_is_not_an_earlier_report(tmp_path, capsys):
    notes = tmp_path / "notes.html"
    notes.write_text("<html>my notes</html>")
    os.mkfifo(tmp_path / "pipe.html")
    (tmp_path / "link.html").symlink_to(notes)
    for out in (notes, tmp_path / "pipe.html", tmp_path / "link.html", tmp_path):
        assert report.main([str(tmp_path), "--out", str(out)]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and f"--out {out}: exists and is not a report of bayesncl-report" in error
        assert "choose a new file" in error
    assert notes.read_text() == "<html>my notes</html>"
    earlier = tmp_path / "earlier.html"
    earlier.write_text("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>BayesNCL report: r</title>")
    report.check_replaceable(earlier)
    report.check_replaceable(tmp_path / "new.html")


def test_browse_out_refuses_what_is_not_an_earlier_site(tmp_path):
    site = tmp_path / "site"
    (site / "data").mkdir(parents=True)
    (site / "data" / "site.js").write_text("BNCL.put('site',{});\n")
    check_site(site)
    check_site(tmp_path / "missing")
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(site / "data", elsewhere)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "data").symlink_to(elsewhere)
    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    for out in (linked, tmp_path / "file", tmp_path / "fifo"):
        with pytest.raises(ConfigError, match=f"--out {out}: exists and is not a feature browser site"):
            check_site(out)


# --- a killed decode leaves nothing behind; a wait is announced ----------------------------------


SLOW_DECODE = """
import sys, time
import bayesncl_pyro.data.vision as vision
from bayesncl_pyro.data.imagefolder_store import load_imagefolder_store
original = vision._decode_file
def slow(*args, **kwargs):
    time.sleep(0.5)
    return original(*args, **kwargs)
vision._decode_file = slow
load_imagefolder_store(sys.argv[1], "train", 8, "crop", processes=2, chunk=1)
"""


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
def test_a_killed_decode_leaves_no_worker_holding_the_lock(tmp_path):
    root = png_tree(tmp_path / "tree", per_class=8)
    parent = subprocess.Popen([sys.executable, "-c", SLOW_DECODE, str(root)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.2)
            workers = _children(parent.pid)
        assert len(workers) >= 2, parent.stderr.read() if parent.poll() is not None else "no workers started"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, workers))
    finally:
        if parent.poll() is None:
            parent.kill()
    lock = store_folder(root, "train", "crop", 8, None).with_suffix(".store.lock")
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody holds it any more
    finally:
        os.close(fd)
    assert len(load_imagefolder_store(str(root), "train", 8, "crop", processes=1)) == 16  # the rerun resumes


def test_a_run_that_waits_for_the_lock_says_so_with_the_path(tmp_path, capsys):
    root = png_tree(tmp_path)
    lock = store_folder(root, "train", "crop", 8, None).with_suffix(".store.lock")
    lock.parent.mkdir(parents=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    os.write(fd, b"4242\n")
    fcntl.flock(fd, fcntl.LOCK_EX)
    loaded = []
    thread = threading.Thread(target=lambda: loaded.append(load_imagefolder_store(str(root), "train", 8, "crop",
                                                                                  processes=1)))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        said = ""
        while "waiting" not in said and time.monotonic() < deadline:
            time.sleep(0.1)
            said += capsys.readouterr().err
        assert f"waiting for the lock {lock}: another process (pid 4242)" in said
        assert not loaded
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        thread.join(60)
    assert len(loaded[0]) == 6


# --- a full disk is one line ---------------------------------------------------------------------


def test_a_full_disk_is_one_error_line_naming_the_store_and_the_space(tmp_path, monkeypatch, capsys):
    root = png_tree(tmp_path / "tree")
    monkeypatch.setattr(allocation.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 100))
    code = prepare.main(["--splits", "train", "data.name=imagefolder", f"data.root={root}", "data.image_size=8",
                         "data.store_size=16"])
    error = capsys.readouterr().err
    pixels = store_folder(root, "train", "crop", 16, None) / PIXELS
    assert code == 2 and error.count("\n") == 1
    assert error.startswith(f"error: cannot create the store's pixel file {pixels}: it needs 4.5 KiB and only "
                            "100 bytes are free")


def test_the_pixel_file_is_allocated_and_a_failed_allocation_names_it(tmp_path, monkeypatch):
    root = png_tree(tmp_path / "tree")
    files, labels, classes = _list_imagefolder(root, "train")
    writer = create_store(tmp_path / "s.store", listing_of(root / "train", files, labels, classes), "crop", 64, 2)
    info = os.stat(writer.folder / PIXELS)
    assert info.st_size == 6 * 3 * 64 * 64 and info.st_blocks * 512 >= info.st_size  # not sparse

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(allocation.os, "posix_fallocate", full)
    with pytest.raises(StorageError, match=f"cannot allocate 72.0 KiB for {tmp_path / 't.store' / PIXELS}: no space"):
        create_store(tmp_path / "t.store", listing_of(root / "train", files, labels, classes), "crop", 64, 2)


# --- FIFOs, devices, oversized files --------------------------------------------------------------


@pytest.fixture
def alarm():
    """Fail instead of hanging: a blocked open of a FIFO ends in a TimeoutError after 30 s."""
    def ring(*_):
        raise TimeoutError("hung")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_fifos_and_devices_in_an_image_folder_are_refused_not_read(tmp_path, alarm):
    root = png_tree(tmp_path)
    fifo = root / "train" / "a" / "x.png"
    os.mkfifo(fifo)
    zero = root / "train" / "b" / "x.jpg"
    zero.symlink_to("/dev/zero")
    with pytest.raises(DataError, match=f"{fifo} is not a readable image .*a FIFO"):
        load_imagefolder_store(str(root), "train", 8, "crop", processes=1)
    with pytest.warns(UserWarning, match="skipped 2 corrupt image file"):
        data = load_imagefolder_store(str(root), "train", 8, "crop", skip_corrupt=True, processes=1)
    assert len(data) == 6
    with pytest.raises(DataError, match=f"{fifo} is not a readable image"):
        load_imagefolder(str(root), "train", cache_dir=str(tmp_path / "cache"), image_size=8)
    with pytest.raises(StorageError, match="character device"):
        decode_image_file(zero)


def _complete_store(root: Path) -> Path:
    load_imagefolder_store(str(root), "train", 8, "crop", processes=1)
    return store_folder(root, "train", "crop", 8, None)


@pytest.mark.parametrize("name", [MANIFEST, LABELS])
def test_a_fifo_or_device_in_a_store_is_refused(tmp_path, alarm, name):
    folder = _complete_store(png_tree(tmp_path))
    (folder / name).unlink()
    os.mkfifo(folder / name)
    with pytest.raises(StorageError, match=f"{folder / name}: it is a FIFO"):
        load_imagefolder_store(str(tmp_path), "train", 8, "crop", processes=1)
    (folder / name).unlink()
    (folder / name).symlink_to("/dev/zero")
    with pytest.raises(StorageError, match=f"{folder / name}: it is a character device"):
        load_imagefolder_store(str(tmp_path), "train", 8, "crop", processes=1)


def test_oversized_store_labels_are_refused(tmp_path):
    folder = _complete_store(png_tree(tmp_path))
    with open(folder / LABELS, "ab") as handle:
        handle.write(bytes(1 << 17))
    with pytest.raises(StorageError, match=f"{folder / LABELS}: it is .*more than"):
        load_imagefolder_store(str(tmp_path), "train", 8, "crop", processes=1)


def test_a_lock_file_that_is_a_fifo_or_a_link_is_refused(tmp_path, alarm):
    root = png_tree(tmp_path)
    lock = store_folder(root, "train", "crop", 8, None).with_suffix(".store.lock")
    lock.parent.mkdir(parents=True)
    os.mkfifo(lock)
    with pytest.raises(StorageError, match=f"cannot use the lock file {lock}: it is not a regular file"):
        load_imagefolder_store(str(root), "train", 8, "crop", processes=1)
    lock.unlink()
    target = tmp_path / "created_by_the_link"
    lock.symlink_to(target)
    with pytest.raises(StorageError, match=f"cannot lock {lock}: it is a symbolic link"):
        load_imagefolder_store(str(root), "train", 8, "crop", processes=1)
    assert not target.exists()


# --- the pixel limit bounds what is decoded --------------------------------------------------------


def test_an_animated_gif_is_decoded_as_its_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((40, 50, 3), 30 * k, dtype=np.uint8)) for k in range(6)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    decoded = decode_image_file(path)
    assert decoded.shape == (3, 40, 50)  # not [6, 3, 40, 50]
    assert torch.equal(decoded, torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1))
    assert fit(decode_image_file(path, reduce_to=16), "crop", 16).shape == (3, 16, 16)


def test_a_side_above_the_limit_is_refused_from_the_header(tmp_path):
    path = tmp_path / "strip.png"
    Image.fromarray(np.zeros((2, 70_000), dtype=np.uint8)).save(path)  # 140,000 pixels, a side past 65,535
    with pytest.raises(DataError, match=f"{path} is 70000x2, a side longer than 65,535 pixels"):
        decode_image_file(path)
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((3, 300), dtype=np.uint8)).save(small)
    with pytest.raises(DataError, match="a side longer than 200 pixels"):
        decode_image_file(small, max_side=200)


def test_a_thin_image_is_never_resized_whole_past_the_pixel_limit(monkeypatch):
    sizes = []
    original = imagefolder_store.resize

    def recording(image, size, **kwargs):
        out = original(image, size, **kwargs)
        sizes.append(out.shape[-2] * out.shape[-1])
        return out

    monkeypatch.setattr(imagefolder_store, "resize", recording)
    strip = torch.randint(0, 256, (3, 10, 4000), dtype=torch.uint8)  # its short side at 32: 32 x 12800
    assert fit(strip, "crop", 32, max_pixels=100_000).shape == (3, 32, 32)
    assert max(sizes) <= 100_000
    sizes.clear()
    assert fit(strip, "crop", 32, max_pixels=10**6).shape == (3, 32, 32)  # within the limit: as before
    assert max(sizes) == 32 * 12800


# --- writes follow no link -------------------------------------------------------------------------


def test_an_unfinished_store_whose_pixels_are_a_link_is_refused(tmp_path):
    root = png_tree(tmp_path / "tree")
    files, labels, classes = _list_imagefolder(root, "train")
    folder = store_folder(root, "train", "crop", 8, None)
    create_store(folder, listing_of(root / "train", files, labels, classes), "crop", 8, 2)
    victim = tmp_path / "victim"
    victim.write_bytes(b"v" * (6 * 3 * 8 * 8))
    (folder / PIXELS).unlink()
    (folder / PIXELS).symlink_to(victim)
    with pytest.raises(StorageError, match=f"cannot write the store's pixel file {folder / PIXELS}: it is a symbolic"):
        load_imagefolder_store(str(root), "train", 8, "crop", processes=1)
    assert victim.read_bytes() == b"v" * (6 * 3 * 8 * 8)


def test_a_store_folder_that_is_a_link_is_refused_naming_it(tmp_path):
    root = png_tree(tmp_path / "tree")
    folder = store_folder(root, "train", "crop", 8, None)
    folder.parent.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    folder.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StorageError, match=f"cannot write the store {folder}: it is a symbolic link"):
        load_imagefolder_store(str(root), "train", 8, "crop", processes=1)


# --- what a store or a cache says is checked ----------------------------------------------------------


@pytest.mark.parametrize("field, value, said", [
    ("classes", ["b", "a"], "its field 'classes' is"),
    ("shape", [6, 3, 8, 9], "its field 'shape' is"),
    ("shape", [5, 3, 8, 8], "its field 'shape' holds 5 images where the listing gives 6"),
    ("pixels", "../../victim", "its field 'pixels' is"),
])
def test_a_store_manifest_changed_by_hand_is_refused(tmp_path, field, value, said):
    folder = _complete_store(png_tree(tmp_path))
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest[field] = value
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=f"{folder / MANIFEST} does not match the listing: {said}.*delete {folder}"):
        load_imagefolder_store(str(tmp_path), "train", 8, "crop", processes=1)


def test_a_cache_with_other_classes_or_shape_is_decoded_again(tmp_path):
    root = png_tree(tmp_path / "tree")
    first = load_imagefolder(str(root), "train", image_size=8)
    path = root / ".bayesncl-cache" / "train.pt"
    for change in ({"classes": ["x", "y"]}, {"images": first.images[:, :, :4]}):
        cache = torch.load(path, weights_only=True)
        torch.save({**cache, **change}, path)
        with pytest.warns(UserWarning, match=f"the image cache {path} does not match the listing"):
            again = load_imagefolder(str(root), "train", image_size=8)
        assert again.classes == ["a", "b"] and torch.equal(again.images, first.images)


def test_a_checkpoint_tensor_that_repeats_its_storage_is_refused_before_it_is_touched(tmp_path):
    state = {"modules": {"net": {"weight": torch.zeros(1).expand(3_000_000_000)}},
             "optimizer": {"state": {}, "param_groups": []}, "scheduler": {}, "scaler": None, "rng": {},
             "step": 0, "epoch": 0, "config": {}}
    path = tmp_path / "last.pt"
    path.write_bytes(checkpoints.encode(state))
    assert path.stat().st_size < 10_000
    with pytest.raises(CheckpointError, match=r"damaged: state\['modules'\]\['net'\]\['weight'\] is a tensor of "
                                              "3,000,000,000 elements over a storage of 1"):
        checkpoints.read(path)


def test_store_size_has_an_upper_bound():
    assert load_config(None, ["data.store_size=2048"]).data.store_size == 2048
    with pytest.raises(ConfigError, match="data.store_size=4096 is not allowed.*<= 2048"):
        load_config(None, ["data.store_size=4096"])


# --- a store beside read-only data is used -----------------------------------------------------------


def test_a_store_beside_read_only_data_is_used_not_decoded_again(tmp_path, monkeypatch):
    root = png_tree(tmp_path / "tree")
    decoded = load_imagefolder_store(str(root), "train", 8, "crop", processes=1)
    monkeypatch.setattr(imagefolder_store, "_writable", lambda folder: not folder.is_relative_to(root))
    monkeypatch.setattr(imagefolder_store, "_decode", lambda *a, **k: pytest.fail("decoded again"))
    user_cache = tmp_path / "home-cache"
    monkeypatch.setattr(imagefolder_store, "_user_cache_dir", lambda root, cache_dir: user_cache)
    again = load_imagefolder_store(str(root), "train", 8, "crop", processes=1)
    assert torch.equal(again.images, decoded.images) and not user_cache.exists()
    assert store_folder(root, "train", "crop", 8, None).is_relative_to(root)
    assert store_folder(root, "train", "crop", 16, None) == user_cache / "train-crop16.store"  # none there


# --- scripts/conflict.py -----------------------------------------------------------------------------


def test_conflict_checks_its_inputs(tmp_path, capsys):
    conflict = load_script("conflict")
    (tmp_path / "file").write_text("x")
    for argv, said in ((["r", "--batches", "0"], "--batches: 0 is not allowed; allowed: an integer from 1"),
                       (["r", "--epochs", "-1"], "--epochs: -1 is not allowed; allowed: an integer from 0"),
                       (["r", "--method", "ncl", "--against", "ncl"], "both 'ncl'"),
                       (["r", "--out", str(tmp_path / "file")], f"--out {tmp_path / 'file'} is a file")):
        with pytest.raises(SystemExit):
            conflict.parse(argv)
        assert said in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(StorageError, match=f"conflict result {bad} is not a result of this script"):
        conflict.read_result(bad)


def test_conflict_merges_new_epochs_into_its_result_file(tmp_path, monkeypatch):
    conflict = load_script("conflict")
    import bayesncl_pyro.evaluation.gradient_conflict as gradient_conflict

    run = tmp_path / "run"
    run.mkdir()
    cfg = load_config(None, ["data.name=scenes"])
    write_config(run, cfg)
    out = tmp_path / "out"

    def measure(run, batches, batch_size, seed, known=None, epochs=None, progress=None, measured_one=None):
        entries = [{"epoch": e, "checkpoint": None if e == 0 else f"epoch_{e:04d}.pt", "stamp": [e], "value": e}
                   for e in (epochs if epochs is not None else (0, 1, 2))]
        return {"run": str(run), "method": gradient_conflict.method_name(cfg), "seed": cfg.train.seed,
                "batches": batches, "batch_size": batch_size or 8, "batch_seed": seed, "checkpoints": entries}

    monkeypatch.setattr(gradient_conflict, "measure_run", measure)
    path = out / f"{gradient_conflict.method_name(cfg)}_seed{cfg.train.seed}.json"
    assert conflict.main([str(run), "--out", str(out)]) == 0
    assert [c["epoch"] for c in json.loads(path.read_text())["checkpoints"]] == [0, 1, 2]
    assert conflict.main([str(run), "--out", str(out), "--epochs", "1", "--force"]) == 0
    assert [c["epoch"] for c in json.loads(path.read_text())["checkpoints"]] == [0, 1, 2]
    with pytest.raises(ConfigError, match=f"{path} holds measurements of .* with batches=6.*--force replaces them"):
        conflict.main([str(run), "--out", str(out), "--batches", "3"])
    assert [c["epoch"] for c in json.loads(path.read_text())["checkpoints"]] == [0, 1, 2]
    assert conflict.merge_checkpoints([{"checkpoint": "b", "epoch": 2}, {"checkpoint": "a", "epoch": 1, "v": 0}],
                                      [{"checkpoint": "a", "epoch": 1, "v": 1}]) == [
        {"checkpoint": "a", "epoch": 1, "v": 1}, {"checkpoint": "b", "epoch": 2}]


def test_a_store_on_a_file_system_without_locks_is_refused_with_the_remedy(tmp_path, monkeypatch):
    root = png_tree(tmp_path)

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    lock = store_folder(root, "train", "crop", 8, None).with_suffix(".store.lock")
    with pytest.raises(DataError, match="does not support locks") as refused:
        load_imagefolder_store(str(root), "train", 8, "crop", processes=1)
    assert str(lock) in str(refused.value) and "data.cache_dir" in str(refused.value)
    assert not lock.with_suffix("").exists()  # nothing decoded unlocked


def test_a_complete_store_on_a_file_system_without_locks_is_still_read(tmp_path, monkeypatch):
    root = png_tree(tmp_path)
    decoded = load_imagefolder_store(str(root), "train", 8, "crop", processes=1)

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    again = load_imagefolder_store(str(root), "train", 8, "crop", processes=1)
    assert len(again) == len(decoded) and torch.equal(again.images[:], decoded.images[:])
    with pytest.raises(DataError, match="does not support locks .*NFS without nolock"):
        load_imagefolder_store(str(root), "train", 16, "crop", processes=1)  # another size: would decode
