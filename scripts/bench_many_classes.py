"""Time and memory of the class-wise steps of bayesncl-eval and bayesncl-inspect when there are as
many classes as images (the hostile case: C = 10,000 classes of one image each).

Each stage runs in its own process, so that its peak resident memory is its own; a stage that
runs past ``--limit`` seconds is stopped and shown as such. Run it with the interpreter of two
checkouts to compare them (the numbers are comparable only on one machine at one load):

    python scripts/bench_many_classes.py [--classes 10000] [--images N] [--stages probe,metrics,draws,figures,export]

Stages: ``probe`` (the linear probe of eval.json on h, 512 features), ``metrics`` (every
per-feature-set metric on z, 128 dims), ``draws`` (200 x 2 posterior draws of the open rate per
dimension and per class), ``figures`` (the inspect figures, heatmap included), ``export``
(gates.nc and its summary table).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

STAGES = ("probe", "metrics", "draws", "figures", "export")


def synthetic(classes: int, images: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``images`` training and test images, labels ``i % classes``: h [N, 512], z [N, 128] (70 %
    zeros), gate_probs [N, 128], uint8 images [N, 3, 8, 8]."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(images) % classes
    h = torch.randn(images, 512, generator=g)
    z = torch.rand(images, 128, generator=g) * (torch.rand(images, 128, generator=g) > 0.7)
    probs = torch.rand(images, 128, generator=g)
    return {"labels": labels, "train_h": h, "test_h": h + 0.5 * torch.randn(images, 512, generator=g),
            "z": z, "train_z": z.roll(1, 1), "gate_probs": probs, "gate": (probs > 0.5).float(),
            "images": torch.randint(0, 256, (images, 3, 8, 8), dtype=torch.uint8, generator=g)}


def run_stage(stage: str, classes: int, images: int) -> dict:
    data = synthetic(classes, images)
    labels = data["labels"]
    start = time.perf_counter()
    if stage == "probe":
        from bayesncl_pyro.evaluation.linear_probe import probe_accuracy

        result = probe_accuracy(data["train_h"], labels, data["test_h"], labels, classes)
        note = f"top1 {result['top1']:.2f} %, {result['iterations']} it, converged {result['converged']}"
    elif stage == "metrics":
        from bayesncl_pyro.evaluation.evaluate import feature_metrics

        result = feature_metrics(data["z"], labels, data["train_z"], labels)
        note = f"SC {result['semantic_consistency']:.2f}, k-NN {result['knn_top1']:.2f}"
    elif stage == "draws":
        from bayesncl_pyro.evaluation.gate_posterior import open_rate_draws

        rates, class_rates = open_rate_draws(data["gate_probs"], labels, classes, 200, 2)
        note = f"class_open_rate {tuple(class_rates.shape)}"
    elif stage == "figures":
        from bayesncl_pyro.evaluation.gate_posterior import draw_figures

        test = {"gate_probs": data["gate_probs"], "gate": data["gate"], "gated": data["z"] * data["gate"],
                "z": data["z"], "labels": labels}
        draws = {"open_rate": torch.rand(2, 20, 128)}
        with tempfile.TemporaryDirectory() as directory:
            figures = draw_figures(test, draws, data["images"], [f"c{i}" for i in range(classes)], Path(directory),
                                   8, 8)
            sizes = {name: path.stat().st_size for name, path in figures.items()}
        note = f"heatmap PNG {sizes.get('class_heatmap', 0) / 1e6:.1f} MB"
    elif stage == "export":
        from bayesncl_pyro.evaluation.gate_posterior import (gate_inference_data, gate_summary, open_rate_draws,
                                                             save_netcdf)

        rates, class_rates = open_rate_draws(data["gate_probs"], labels, classes, 200, 2)
        idata = gate_inference_data(rates, class_rates, data["gate_probs"], labels, [f"c{i}" for i in range(classes)])
        with tempfile.TemporaryDirectory() as directory:
            path = save_netcdf(idata, Path(directory) / "gates.nc")
            size = path.stat().st_size
            table = gate_summary(idata)
        note = f"gates.nc {size / 1e6:.0f} MB, summary {len(table)} rows"
    else:
        raise SystemExit(f"error: unknown stage {stage!r}; allowed: {', '.join(STAGES)}")
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"stage": stage, "seconds": seconds, "peak_mb": peak_mb, "note": note}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10_000)
    parser.add_argument("--images", type=int, default=0, help="images per split (default: one per class)")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--limit", type=float, default=600.0, help="seconds a stage may run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = args.images or args.classes
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.classes, images)))
        return
    import bayesncl_pyro

    print(f"C = {args.classes} classes, N = {images} images per split, threads {args.threads}, "
          f"code {bayesncl_pyro.__file__}")
    for stage in args.stages.split(","):
        command = [sys.executable, __file__, "--stage", stage, "--classes", str(args.classes),
                   "--images", str(images), "--threads", str(args.threads)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.limit)
        except subprocess.TimeoutExpired:
            print(f"{stage}: stopped after {args.limit:.0f} s", flush=True)
            continue
        if done.returncode != 0:
            print(f"{stage}: failed ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode})",
                  flush=True)
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{stage}: {r['seconds']:.1f} s, peak memory {r['peak_mb']:.0f} MB ({r['note']})", flush=True)


if __name__ == "__main__":
    main()
