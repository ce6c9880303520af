"""The on-disk image store measured against what it replaces; every part prints ratios.

Parts (``--parts``, default ``rss pss throughput decode``):

- ``rss``: anonymous memory (``RssAnon``, peak, sampled every 0.2 s) of a training process
  (``python -m bayesncl_pyro.train``, tiny convnet at 32x32, random resized crops from a store at
  256x256) on a store of ``--small-gb`` and of ``--large-gb``: the two should be within 300 MB.
  For contrast, the small store with ``data.store=memory`` (the split read into the process).
- ``pss``: the same training on a store of ``--pss-gb`` under ``torchrun --nproc-per-node 2`` (each rank
  ``--batch`` images of a global batch of 2x``--batch``, one epoch so every image is read) against
  one process on the global batch (batch 2x``--batch``): total PSS (proportional set size, from
  ``/proc/<pid>/smaps_rollup``; a page shared by k processes counts 1/k in each) of the ranks /
  PSS of the single process. Private copies of the split would make it about 2.
- ``throughput``: CPU training steps/s of one session (tiny convnet, ``--image-size`` crops)
  fed from the memory-mapped store, from the same pixels in memory, and from torchvision
  ``ImageFolder`` + ``DataLoader`` (``--workers`` workers) decoding the JPEGs every epoch
  (resize short side + centre crop, as the store). The feeds alternate in rounds so load changes on
  a shared machine hit all alike; the median ratio is printed.
- ``decode``: the JPEG tree decoded into a new store with 1 and with every core: images/s and
  images/s per core.
- ``reduced``: one process decoding the tree's JPEGs for a store at ``--reduced-size`` (short
  side resized, centre crop), as the store does (libjpeg's reduced-scale decode of an image at
  least twice that size) against a full-scale decode then the same resize; blocks alternate, the
  median ratio of images/s is printed.
- ``feed``: batches/s of the data path alone (gather + pin + copy to ``--device``) from the store
  vs from an in-memory tensor; what ``scripts/gpu_check.sh`` reports.

The stores of ``rss`` and ``pss`` are written directly (random pixels into the store format,
beside empty placeholder ``.jpg`` files that make the ImageFolder listing the store is verified
against): decoding 8 GB of JPEGs would measure the decoder, which ``decode`` does on real
JPEGs (random-content images, ImageNet-like sizes around 500x375, quality 90). Everything lives
in a new folder ``bench_store.XXXXXXXX`` of this run's own under ``--work`` (default ``/var/tmp``),
deleted at the end (on failure too) unless ``--keep``: what was in ``--work`` before is never
touched, and a ``--work`` folder this run created is removed again when it is left empty.

    nice -n 10 python scripts/bench_store.py --parts rss pss throughput decode
    python scripts/bench_store.py --parts feed --device cuda --feed-images 4096
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
STORE_SIZE = 256
TINY = ["model.backbone=convnet", "model.convnet_width=8", "model.proj_hidden=64", "model.proj_dim=32",
        "gate.hidden=32", "train.device=cpu", "train.precision=32", "optim.warmup_epochs=0", "train.log_every=10",
        "data.eval_batch_size=256"]
MB = 1024 * 1024


# ----------------------------------------------------------------------------- data
def synthetic_store(root: Path, split: str, count: int, classes: int, size: int = STORE_SIZE) -> Path:
    """A complete crop-geometry store of ``count`` random images under ``root`` (with empty
    placeholder files for its listing); returns its folder."""
    from bayesncl_pyro.data.image_store import create_store
    from bayesncl_pyro.data.imagefolder_store import listing_of, store_folder
    from bayesncl_pyro.data.vision import _list_imagefolder

    for k in range(count):
        folder = root / split / f"c{k % classes:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{k:07d}.jpg").touch()
    files, labels, names = _list_imagefolder(root, split)
    listing = listing_of(root / split, files, labels, names)
    folder = store_folder(root, split, "crop", size, None)
    writer = create_store(folder, listing, "crop", size, 512)
    rows, rng = writer.rows(), np.random.default_rng(0)
    block = rng.integers(0, 256, (writer.chunk, 3, size, size), dtype=np.uint8)
    for chunk in range(writer.num_chunks):
        part = writer.chunk_rows(chunk)
        rows[part.start:part.stop] = np.roll(block, chunk, axis=-1)[:len(part)]
        writer.mark_done(chunk, [])
    rows.flush()
    del rows
    writer.finish(np.asarray(labels, dtype=np.int64), [])
    return folder


def store_count(gigabytes: float, size: int = STORE_SIZE) -> int:
    return int(gigabytes * 1024**3 / (3 * size * size))


def jpeg_tree(root: Path, per_class: int, classes: int = 10) -> Path:
    """Random-content JPEGs of ImageNet-like sizes (about 500x375) in root/{train,test}/<class>/."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", max(2, per_class // 10))):
        for c in range(classes):
            folder = root / split / f"c{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                height, width = int(rng.integers(330, 420)), int(rng.integers(450, 520))
                base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
                pixels = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))[:height, :width]  # JPEG-like content
                noise = rng.integers(0, 24, pixels.shape, dtype=np.uint8)
                Image.fromarray(pixels + noise).save(folder / f"{k:05d}.jpg", quality=90)
    return root


# ----------------------------------------------------------------------------- process memory
def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
                found += [int(child), *_children(int(child))]
    except OSError:
        pass
    return found


def _proc_kb(pid: int, file: str, key: str) -> int:
    """The ``key:`` line of ``/proc/<pid>/<file>`` in kB (0 when the process or the line is gone)."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _is_python(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"bayesncl_pyro.train" in command and b"torch.distributed.run" not in command  # not the launcher


def run_sampled(command: list[str], env: dict | None = None, timeout: float = 1800) -> dict:
    """Run ``command``; sample every 0.2 s its training processes (itself, or the ranks that
    torchrun starts): peak RssAnon of one process, peak summed PSS and peak PSS per process."""
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    peaks = {"rss_anon_kb": 0, "pss_total_kb": 0, "processes": 0}
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    started = time.monotonic()
    while process.poll() is None:
        pids = [p for p in [process.pid, *_children(process.pid)] if _is_python(p)]
        if pids:
            peaks["rss_anon_kb"] = max(peaks["rss_anon_kb"], *(_proc_kb(p, "status", "RssAnon") for p in pids))
            total = sum(_proc_kb(p, "smaps_rollup", "Pss") for p in pids)
            if total > peaks["pss_total_kb"]:
                peaks["pss_total_kb"], peaks["processes"] = total, len(pids)
        if time.monotonic() - started > timeout:
            process.kill()
            raise RuntimeError(f"{' '.join(command)} ran past {timeout} s")
        time.sleep(0.2)
    reader.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{''.join(output)[-3000:]}")
    peaks["seconds"] = time.monotonic() - started
    return peaks


def train_command(root: Path, out: Path, batch: int, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bayesncl_pyro.train", "--no-progress", "--config",
            str(ROOT / "configs" / "scenes_quick.yaml"), *TINY, "data.name=imagefolder", f"data.root={root}",
            f"data.store_size={STORE_SIZE}", "data.image_size=32", f"data.batch_size={batch}",
            f"train.steps={steps}", f"train.out_dir={out}", *extra]


def synthetic_tree(work: Path, name: str, gigabytes: float, test_images: int = 256, classes: int = 10) -> Path:
    root = work / name
    started = time.monotonic()
    synthetic_store(root, "train", store_count(gigabytes), classes)
    synthetic_store(root, "test", test_images, classes)
    print(f"  wrote {name}: {store_count(gigabytes)} train images of {STORE_SIZE}x{STORE_SIZE} "
          f"({gigabytes:.1f} GiB) in {time.monotonic() - started:.0f} s", flush=True)
    return root


# ----------------------------------------------------------------------------- parts
def part_rss(args, work: Path) -> dict:
    print("rss: peak RssAnon of a training process", flush=True)
    small = synthetic_tree(work, "small", args.small_gb)
    result = {}
    for label, root, extra in (("store_small", small, ["data.store=mmap"]),
                               ("memory_small", small, ["data.store=memory"])):
        peaks = run_sampled(train_command(root, work / f"run_{label}", args.batch, args.steps, *extra),
                            env={"OMP_NUM_THREADS": "1"})
        result[label] = peaks["rss_anon_kb"] / 1024
        print(f"  {label}: RssAnon {result[label]:.0f} MB ({peaks['seconds']:.0f} s)", flush=True)
    if args.large_gb:
        large = synthetic_tree(work, "large", args.large_gb)
        peaks = run_sampled(train_command(large, work / "run_large", args.batch, args.steps, "data.store=mmap"),
                            env={"OMP_NUM_THREADS": "1"})
        result["store_large"] = peaks["rss_anon_kb"] / 1024
        print(f"  store_large: RssAnon {result['store_large']:.0f} MB ({peaks['seconds']:.0f} s)", flush=True)
        shutil.rmtree(large)
        result["large_minus_small_mb"] = result["store_large"] - result["store_small"]
        print(f"  RssAnon {args.large_gb:.0f} GiB store - {args.small_gb:.0f} GiB store: "
              f"{result['large_minus_small_mb']:+.0f} MB (allowed: within 300 MB)")
    shutil.rmtree(small)
    print(f"  RssAnon memory / store ({args.small_gb:.0f} GiB): {result['memory_small'] / result['store_small']:.2f}")
    return result


def part_pss(args, work: Path) -> dict:
    print("pss: two torchrun ranks on one store vs one process", flush=True)
    small = synthetic_tree(work, "pss", args.pss_gb)
    epoch = store_count(args.pss_gb) // (2 * args.batch)
    env = {"OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    one = run_sampled(train_command(small, work / "run_one", 2 * args.batch, epoch, "data.store=mmap"), env=env)
    ranks = run_sampled([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                         "127.0.0.1", "--master-port", "29533", *train_command(
                             small, work / "run_two", args.batch, epoch, "data.store=mmap",
                             "train.distributed=true")[1:]], env=env)
    shutil.rmtree(small)
    ratio = ranks["pss_total_kb"] / one["pss_total_kb"]
    print(f"  one process: PSS {one['pss_total_kb'] / 1024:.0f} MB; {ranks['processes']} ranks: total PSS "
          f"{ranks['pss_total_kb'] / 1024:.0f} MB; ratio {ratio:.2f} (allowed: < 1.3; private copies: ~2)", flush=True)
    return {"one_pss_mb": one["pss_total_kb"] / 1024, "two_ranks_pss_mb": ranks["pss_total_kb"] / 1024,
            "ratio": ratio, "steps": epoch, "processes": ranks["processes"]}


def _session(root: Path, image_size: int, batch: int):
    from bayesncl_pyro.config import load_config
    from bayesncl_pyro.training.session import build

    cfg = load_config(ROOT / "configs" / "scenes_quick.yaml",
                      [*TINY, "data.name=imagefolder", f"data.root={root}", f"data.store_size={STORE_SIZE}",
                       f"data.image_size={image_size}", f"data.batch_size={batch}", "data.store=mmap",
                       "train.out_dir=unused"])
    return build(cfg)


def part_throughput(args, work: Path) -> dict:
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision.transforms import v2

    from bayesncl_pyro.data.dataset import ImageDataset
    from bayesncl_pyro.training.batches import Prefetcher
    from bayesncl_pyro.training.distributed import rank_batches
    from bayesncl_pyro.training.step import train_step

    print("throughput: CPU training steps fed from the store, from memory, from JPEGs", flush=True)
    tree = work / "jpeg" if (work / "jpeg" / "train").is_dir() else jpeg_tree(work / "jpeg", args.jpegs // 10)
    torch.set_num_threads(1)
    s = _session(tree, args.image_size, args.batch)
    mapped = s.train_set
    memory = ImageDataset(mapped.images.clone(), mapped.labels.clone(), mapped.classes)
    transform = v2.Compose([v2.PILToTensor(), v2.Resize(STORE_SIZE, antialias=True), v2.CenterCrop(STORE_SIZE)])
    folder = datasets.ImageFolder(str(tree / "train"), transform=transform)
    loader = DataLoader(folder, batch_size=args.batch, shuffle=True, num_workers=args.workers, drop_last=True,
                        persistent_workers=False)

    def store_or_memory(data):
        def batches(steps):
            indices = rank_batches(len(data), args.batch, 0, 0, 0, 0, 1)
            for k, batch in enumerate(Prefetcher(data.images, data.labels, indices)):
                if k == steps:
                    return
                yield batch
        return batches

    def jpegs(steps):
        for k, batch in enumerate(loader):
            if k == steps:
                return
            yield batch

    feeds = {"store": store_or_memory(mapped), "memory": store_or_memory(memory), "jpeg_dataloader": jpegs}
    rates: dict[str, list[float]] = {name: [] for name in feeds}
    steps = min(args.throughput_steps, len(mapped) // args.batch)
    for _ in range(1 + args.rounds):  # the first round warms caches and is not counted
        for name, feed in feeds.items():
            started = time.perf_counter()
            done = 0
            for images, labels in feed(steps):
                train_step(s, images, labels)
                done += 1
            rates[name].append(done * args.batch / (time.perf_counter() - started))
    result = {name: statistics.median(values[1:]) for name, values in rates.items()}
    for name, value in result.items():
        print(f"  {name}: {value:.0f} images/s (median of {args.rounds} rounds of {steps} steps, batch {args.batch}, "
              f"{args.image_size}x{args.image_size} crops)")
    print(f"  store / memory: {result['store'] / result['memory']:.2f} (wanted >= 0.9); store / JPEG DataLoader "
          f"({args.workers} workers): {result['store'] / result['jpeg_dataloader']:.2f}", flush=True)
    return result


def part_decode(args, work: Path) -> dict:
    from bayesncl_pyro.data.imagefolder_store import load_imagefolder_store, workers

    print("decode: JPEGs into a store", flush=True)
    tree = work / "jpeg" if (work / "jpeg" / "train").is_dir() else jpeg_tree(work / "jpeg", args.jpegs // 10)
    result = {}
    for processes in sorted({1, workers()}):
        cache = work / f"decode_cache_{processes}"
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = load_imagefolder_store(str(tree), "train", STORE_SIZE, "crop", cache_dir=str(cache),
                                          processes=processes)
        rate = len(data) / (time.perf_counter() - started)
        result[f"processes_{processes}"] = rate
        print(f"  {processes} process(es): {rate:.0f} images/s, {rate / processes:.0f} images/s per core "
              f"({len(data)} JPEGs of about 500x375 -> {STORE_SIZE}x{STORE_SIZE})", flush=True)
        shutil.rmtree(cache)
    return result


def part_reduced(args, work: Path) -> dict:
    from bayesncl_pyro.data.image_input import decode_image_file
    from bayesncl_pyro.data.imagefolder_store import fit

    size = args.reduced_size
    print(f"reduced: one process decoding JPEGs of about 500x375 for a {size}x{size} store", flush=True)
    tree = work / "jpeg" if (work / "jpeg" / "train").is_dir() else jpeg_tree(work / "jpeg", args.jpegs // 10)
    files = sorted((tree / "train").glob("*/*.jpg"))[: args.reduced_images]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ways = {"reduced": lambda path: fit(decode_image_file(path, reduce_to=size), "crop", size),
            "full": lambda path: fit(decode_image_file(path), "crop", size)}
    rates: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, decode in ways.items():
            started = time.perf_counter()
            for path in files:
                decode(path)
            rates[name].append(len(files) / (time.perf_counter() - started))
    torch.set_num_threads(threads)
    ratio = statistics.median(r / f for r, f in zip(rates["reduced"], rates["full"]))
    result = {name: statistics.median(values) for name, values in rates.items()} | {"ratio": ratio}
    print(f"  reduced-scale {result['reduced']:.0f} images/s, full-scale {result['full']:.0f} images/s "
          f"({len(files)} JPEGs, {args.rounds} rounds): reduced / full = {ratio:.2f}", flush=True)
    return result


def part_feed(args, work: Path) -> dict:
    from bayesncl_pyro.data.imagefolder_store import load_imagefolder_store
    from bayesncl_pyro.training.batches import Prefetcher
    from bayesncl_pyro.training.distributed import rank_batches

    device = torch.device(args.device)
    root = work / "feed"
    synthetic_store(root, "train", args.feed_images, 10, args.feed_size)
    synthetic_store(root, "test", 16, 10, args.feed_size)
    mapped = load_imagefolder_store(str(root), "train", args.feed_size, "crop")
    memory = mapped.images.clone()
    result = {}
    for name, images in (("store", mapped.images), ("memory", memory), ("store", mapped.images),
                         ("memory", memory)):  # the second pass of each counts (page cache warm)
        indices = rank_batches(len(images), args.batch, 0, 0, 0, 0, 1)
        started, count = time.perf_counter(), 0
        for x, _ in Prefetcher(images, mapped.labels, indices, pin=device.type == "cuda"):
            x.to(device, non_blocking=True)
            count += x.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        result[name] = count / (time.perf_counter() - started)
    result["ratio"] = result["store"] / result["memory"]
    print(json.dumps({"store_images_per_second": result["store"], "memory_images_per_second": result["memory"],
                      "ratio": result["ratio"], "device": str(device), "size": args.feed_size,
                      "images": args.feed_images, "batch": args.batch}))
    return result


PARTS = {"rss": part_rss, "pss": part_pss, "throughput": part_throughput, "decode": part_decode,
         "reduced": part_reduced, "feed": part_feed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=["rss", "pss", "throughput", "decode"])
    parser.add_argument("--small-gb", type=float, default=1.0)
    parser.add_argument("--large-gb", type=float, default=8.0, help="0 leaves the large store out")
    parser.add_argument("--pss-gb", type=float, default=2.0, help="store of the pss part")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="training steps of the rss part")
    parser.add_argument("--jpegs", type=int, default=2000, help="JPEG files of the throughput and decode parts")
    parser.add_argument("--image-size", type=int, default=64, help="training crop size of the throughput part")
    parser.add_argument("--throughput-steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding JPEGs")
    parser.add_argument("--device", default="cpu", help="feed part: where batches are copied")
    parser.add_argument("--reduced-size", type=int, default=64, help="store size of the reduced part")
    parser.add_argument("--reduced-images", type=int, default=300, help="JPEGs decoded per block (reduced part)")
    parser.add_argument("--feed-images", type=int, default=2048)
    parser.add_argument("--feed-size", type=int, default=224)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp"),
                        help="where this run makes its own work folder (default /var/tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    base = args.work.absolute()
    created = [folder for folder in (base, *base.parents) if not folder.exists()]  # deepest first
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_store.", dir=base))
    print(f"work folder: {work}", flush=True)
    results = {}
    try:
        for part in args.parts:
            results[part] = PARTS[part](args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            for folder in created:  # only what this run made, and only when nothing else is in it
                try:
                    folder.rmdir()
                except OSError:
                    break
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
