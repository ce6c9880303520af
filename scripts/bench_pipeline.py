"""Throughput of two-view augmentation: BatchAugment on whole batches vs torchvision per sample.

All pipelines read the same random uint8 images [N, 3, 32, 32] through a DataLoader with the same
number of workers and make two views of every image, batch 256, on the CPU:

- ``torchvision``: per-sample ``torchvision.transforms.v2`` pipeline (same augmentations) run in
  the workers, collated into batches;
- ``batched-in-workers``: each worker returns a uint8 batch made into two views by BatchAugment
  (same processes and threads as torchvision: the fair like-for-like comparison);
- ``batched-in-main``: workers only slice uint8 batches; BatchAugment runs in the main process
  with ``--threads`` intra-op threads (how training uses it on an accelerator).

The images are split into ``--rounds`` slices and every pipeline runs on each slice in turn, in
one process, so load changes on a shared machine hit all of them alike. Prints images/s (an image
counts once, with its two views) per round and the median ratio to torchvision.

    python scripts/bench_pipeline.py --images 5000 --workers 2
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from bayesncl_pyro.config import AugmentConfig
from bayesncl_pyro.data.augment import BatchAugment, blur_kernel_size

SIZE = 32
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.247, 0.243, 0.261)


def torchvision_pipeline(cfg: AugmentConfig) -> v2.Compose:
    """The per-sample v2 equivalent of BatchAugment(cfg, SIZE, MEAN, STD) on a uint8 [3, H, W] tensor."""
    kernel_size = blur_kernel_size(cfg.blur_sigma_max, SIZE)
    return v2.Compose(
        [
            v2.RandomResizedCrop(
                SIZE, scale=(cfg.crop_scale_min, cfg.crop_scale_max), ratio=(cfg.crop_ratio_min, cfg.crop_ratio_max)
            ),
            v2.RandomApply([v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)], p=cfg.jitter_prob),
            v2.RandomGrayscale(p=cfg.gray_prob),
            v2.RandomApply(
                [v2.GaussianBlur(kernel_size, sigma=(cfg.blur_sigma_min, cfg.blur_sigma_max))], p=cfg.blur_prob
            ),
            v2.RandomHorizontalFlip(p=cfg.flip_prob),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )


class PerSampleViews(Dataset):
    """Item i: two independent torchvision views of image i, float [3, SIZE, SIZE] each."""

    def __init__(self, images: torch.Tensor, transform: v2.Compose):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int):
        image = self.images[index]
        return self.transform(image), self.transform(image)


class Batches(Dataset):
    """Item k: the k-th uint8 batch [≤batch_size, 3, H, W], optionally made into two views."""

    def __init__(self, images: torch.Tensor, batch_size: int, augment: BatchAugment | None = None):
        self.images, self.batch_size, self.augment = images, batch_size, augment

    def __len__(self) -> int:
        return -(-self.images.shape[0] // self.batch_size)

    def __getitem__(self, index: int):
        batch = self.images[index * self.batch_size : (index + 1) * self.batch_size]
        if self.augment is None:
            return batch
        return self.augment(batch), self.augment(batch)


def make_loader(
    name: str, images: torch.Tensor, batch_size: int, workers: int
) -> tuple[DataLoader, BatchAugment | None]:
    """The loader of pipeline ``name`` over ``images``, and the module the main process applies (if any)."""
    cfg = AugmentConfig()
    augment = BatchAugment(cfg, SIZE, MEAN, STD)
    if name == "torchvision":
        dataset = PerSampleViews(images, torchvision_pipeline(cfg))
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers), None
    if name == "batched-in-workers":
        return DataLoader(Batches(images, batch_size, augment), batch_size=None, num_workers=workers), None
    return DataLoader(Batches(images, batch_size), batch_size=None, num_workers=workers), augment


PIPELINES = ("torchvision", "batched-in-workers", "batched-in-main")


def run_epoch(loader: DataLoader, augment: BatchAugment | None) -> int:
    """Make two views of every image the loader yields; returns the number of images."""
    count = 0
    for item in loader:
        if augment is not None:
            first, second = augment(item), augment(item)
        else:
            first, second = item
        assert first.shape[1:] == (3, SIZE, SIZE) and second.shape == first.shape
        count += first.shape[0]
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000, help="number of random 32x32 uint8 images")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, the same for every pipeline")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the main process")
    parser.add_argument(
        "--rounds", type=int, default=2, help="slices of the images; each slice is timed for every pipeline in turn"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    images = torch.randint(0, 256, (args.images, 3, SIZE, SIZE), dtype=torch.uint8)
    print(
        f"{args.images} images {SIZE}x{SIZE}, two views each, batch {args.batch_size}, "
        f"{args.workers} workers, {args.threads} main-process threads, {args.rounds} rounds "
        "(worker start-up included in every timing)"
    )
    torchvision_pipeline(AugmentConfig())(images[0])
    BatchAugment(AugmentConfig(), SIZE, MEAN, STD)(images[:2])

    throughput: dict[str, list[float]] = {name: [] for name in PIPELINES}
    for round_index, chunk in enumerate(images.chunk(args.rounds)):
        for name in PIPELINES:
            loader, augment = make_loader(name, chunk, args.batch_size, args.workers)
            start = time.perf_counter()
            count = run_epoch(loader, augment)
            throughput[name].append(count / (time.perf_counter() - start))
            print(f"round {round_index + 1}  {name:<20} {throughput[name][-1]:10.0f} images/s")

    baseline = statistics.median(throughput["torchvision"])
    print("median over rounds:")
    for name, values in throughput.items():
        median = statistics.median(values)
        print(f"  {name:<20} {median:10.0f} images/s   ratio to torchvision {median / baseline:6.2f}x")


if __name__ == "__main__":
    main()
