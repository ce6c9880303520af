"""Training throughput in images per second: the project's own training step (two augmented
views, the backbone once on 2B rows, the negative ELBO, the online probe, the optimizer step) on
one fixed batch, timed after warm-up steps (which also pay for ``torch.compile``).

    python scripts/bench_throughput.py --device cuda --precision bf16 --compile model.backbone=resnet18

Prints one JSON line: images_per_second, seconds_per_step (median over timed blocks), device,
precision, compile, backbone, batch, steps. The batch comes from generated ``scenes`` images of
the configured size, so no dataset is needed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "cifar10_resnet18.yaml"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="32", choices=["32", "bf16", "16"])
    parser.add_argument("--compile", action="store_true", help="train.compile=true (torch.compile of the backbone)")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend (inductor; 'eager' traces without code generation, for dry runs)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from bayesncl_pyro.config import load_config
    from bayesncl_pyro.training.session import build
    from bayesncl_pyro.training.step import train_step

    cfg = load_config(args.config, [
        "data.name=scenes", f"data.batch_size={args.batch}", f"data.scenes.num_train={args.batch}",
        "data.scenes.num_test=16", f"train.epochs={args.warmup + args.steps + 1}", "optim.warmup_epochs=1",
        f"train.device={args.device}", f"train.precision={args.precision}",
        f"train.compile={'true' if args.compile else 'false'}", "train.out_dir=/tmp/bayesncl-throughput",
        *args.overrides])
    session = build(cfg)
    if args.compile and args.compile_backend != "inductor":
        session.net.backbone.compile(backend=args.compile_backend)
    images, labels = session.train_set.images, session.train_set.labels
    session.net.train()

    def synchronize() -> None:
        if session.device.type == "cuda":
            torch.cuda.synchronize(session.device)

    for _ in range(args.warmup):
        train_step(session, images, labels)
    synchronize()
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        train_step(session, images, labels)
        synchronize()
        times.append(time.perf_counter() - started)
    per_step = statistics.median(times)
    result = {"images_per_second": args.batch / per_step, "seconds_per_step": per_step,
              "device": str(session.device), "precision": args.precision, "compile": args.compile,
              "backbone": cfg.model.backbone, "batch": args.batch, "steps": args.steps}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
