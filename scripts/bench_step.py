"""Overhead of the Pyro program: one SVI step vs the same SPEC §3 loss written in plain PyTorch.

Both variants train the same network (backbone, projector, gate net) on the same batch with the
same SGD optimizer; they differ only in how the loss is built:

- ``pyro``: ``BayesNCL.loss`` (model/guide, ``TraceMeanField_ELBO.differentiable_loss``);
- ``plain``: the SPEC §3 formula below, written directly (``ste`` gates or no gates).

Blocks of ``--steps`` steps of each variant alternate in one process (the order flips every
block), so load changes on a shared machine hit both alike; the printed ratio is the median over
blocks of pyro/plain step time (target: at most 1.05 with the conv encoder); on a loaded machine
the ratio of the fastest steps and of process CPU time are printed beside it. Peak memory of a
step: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU, the peak resident set of a fresh
process running only that variant, above its resident set before the first step.

    python scripts/bench_step.py                                  # convnet, CPU, about a minute
    python scripts/bench_step.py --device cuda --batch 256 model.backbone=resnet18

With ``--gates NAME=OVERRIDE[,OVERRIDE...] ...`` it measures instead each named gate choice's
training step (the package's SVI step) against the paper's ``ste`` step of the same config, blocks
alternating in one process the same way, and prints the median ratio NAME/ste:

    python scripts/bench_step.py --batch 256 --gates negatives_gated=gate.prior=negatives_gated \
        disarm=gate.estimator=disarm frequency_bernoulli=gate.prior=frequency_bernoulli
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F

from bayesncl_pyro.config import load_config
from bayesncl_pyro.config.device import autocast, resolve_device
from bayesncl_pyro.inference.bayesncl import BayesNCL

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("pyro", "plain")


def plain_loss(net: BayesNCL, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """SPEC §3 without Pyro: z̃ = normalize(normalize(z) ⊙ m), InfoNCE(z̃; τ) + λ mean_rows Σ_d KL,
    with m the straight-through hard gate; InfoNCE and KL in float32, as in the package."""
    cfg, gate = net.cfg, net.cfg.gate
    h = net.backbone(torch.cat([x1, x2]))
    z = net.nonneg(net.projector(h)).float()
    gate_logits = net.guide.gate_logits(h)
    with torch.autocast(device_type=z.device.type, enabled=False):
        rows = F.normalize(z, dim=1)
        kl = z.new_zeros(())
        if gate_logits is not None:
            alpha = torch.sigmoid(gate_logits.float() / gate.temperature)
            m = (alpha > gate.threshold).float() + (alpha - alpha.detach())
            rows = F.normalize(rows * m, dim=1)
            a = alpha.clamp(0.01, 0.99)
            rho = min(max(gate.prior_prob, 0.01), 0.99)
            kl = (a * (a.log() - torch.log(torch.tensor(rho))) +
                  (1 - a) * ((1 - a).log() - torch.log(torch.tensor(1 - rho)))).sum(1).mean()
        n = rows.shape[0]
        logits = rows @ rows.T / cfg.model.temperature
        logits = logits.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
        partner = (torch.arange(n, device=z.device) + n // 2) % n
        return F.cross_entropy(logits, partner) + gate.kl_weight * kl


class Bench:
    """The network, optimizer and fixed batch shared by both variants."""

    def __init__(self, args):
        cfg = load_config(args.config, args.overrides)
        if cfg.gate.prior not in ("none", "bernoulli") or (cfg.gate.prior == "bernoulli" and cfg.gate.estimator != "ste"):
            raise SystemExit("the plain-PyTorch loss covers gate.prior=none and gate.prior=bernoulli with gate.estimator=ste")
        torch.set_num_threads(args.threads)
        pyro.set_rng_seed(0)
        self.device = resolve_device(args.device)
        self.precision = args.precision
        self.net = BayesNCL(cfg).to(self.device)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=1e-3, momentum=0.9)
        size = cfg.data.image_size
        g = torch.Generator().manual_seed(0)
        colour = torch.randn(args.batch, 3, 1, 1, generator=g)
        self.views = [(colour + torch.randn(args.batch, 3, size, size, generator=g)).to(self.device) for _ in range(2)]

    def loss(self, variant: str) -> torch.Tensor:
        with autocast(self.device, self.precision):
            return self.net.loss(*self.views) if variant == "pyro" else plain_loss(self.net, *self.views)

    def step(self, variant: str) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with pyro.validation_enabled(False):  # as in the training loop
            loss = self.loss(variant)
        loss.backward()
        self.optimizer.step()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def seconds_per_step(self, variant: str, steps: int) -> tuple[float, float]:
        """(wall, process CPU) seconds per step over ``steps`` steps."""
        self.sync()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step(variant)
        self.sync()
        return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


class GateBench:
    """One network per gate choice (``ste`` first: the config as given, with gate.prior=bernoulli
    and gate.estimator=ste), each with its own optimizer, on one fixed batch."""

    def __init__(self, args):
        torch.set_num_threads(args.threads)
        self.device = resolve_device(args.device)
        self.precision = args.precision
        choices = {"ste": ["gate.prior=bernoulli", "gate.estimator=ste"]}
        for item in args.gates:
            name, _, overrides = item.partition("=")
            if not name or not overrides or name == "ste":
                raise SystemExit(f"error: --gates {item!r}: allowed: NAME=OVERRIDE[,OVERRIDE...] with NAME not 'ste'")
            choices[name] = ["gate.prior=bernoulli", "gate.estimator=ste", *overrides.split(",")]
        self.nets, self.optimizers = {}, {}
        for name, overrides in choices.items():
            pyro.set_rng_seed(0)
            cfg = load_config(args.config, [*args.overrides, *overrides])
            self.nets[name] = BayesNCL(cfg).to(self.device)
            self.optimizers[name] = torch.optim.SGD(self.nets[name].parameters(), lr=1e-3, momentum=0.9)
        size = next(iter(self.nets.values())).cfg.data.image_size
        g = torch.Generator().manual_seed(0)
        colour = torch.randn(args.batch, 3, 1, 1, generator=g)
        self.views = [(colour + torch.randn(args.batch, 3, size, size, generator=g)).to(self.device) for _ in range(2)]

    def step(self, name: str) -> None:
        self.optimizers[name].zero_grad(set_to_none=True)
        with pyro.validation_enabled(False), autocast(self.device, self.precision):
            loss = self.nets[name].loss(*self.views)
        loss.backward()
        self.optimizers[name].step()

    def seconds_per_step(self, name: str, steps: int) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        wall = time.perf_counter()
        for _ in range(steps):
            self.step(name)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return (time.perf_counter() - wall) / steps


def compare_gates(args) -> None:
    """Each gate choice's median step time over the ``ste`` step's, blocks alternating in order."""
    bench = GateBench(args)
    for name in bench.nets:
        for _ in range(args.warmup):
            bench.step(name)
    times = {name: [] for name in bench.nets}
    ratios = {name: [] for name in bench.nets if name != "ste"}
    for block in range(args.blocks):
        for name in ratios:
            pair = ("ste", name) if block % 2 == 0 else (name, "ste")
            measured = {n: bench.seconds_per_step(n, args.steps) for n in pair}
            times[name].append(measured[name])
            times["ste"].append(measured["ste"])
            ratios[name].append(measured[name] / measured["ste"])
    print(f"device {bench.device}, precision {args.precision}, batch {args.batch}, "
          f"{args.blocks} blocks x {args.steps} steps per choice")
    for name, series in times.items():
        print(f"{name:>22}: median {1e3 * statistics.median(series):8.1f} ms/step")
    for name, series in ratios.items():
        print(f"{name:>22}: median ratio {name}/ste {statistics.median(series):.3f} "
              f"(block ratios {min(series):.3f}-{max(series):.3f})")


def _rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


def peak_memory(bench: Bench, variant: str, steps: int) -> int:
    """Bytes above the state before the first step, at the peak of ``steps`` steps."""
    if bench.device.type == "cuda":
        bench.sync()
        torch.cuda.reset_peak_memory_stats(bench.device)
        before = torch.cuda.memory_allocated(bench.device)
        for _ in range(steps):
            bench.step(variant)
        bench.sync()
        return torch.cuda.max_memory_allocated(bench.device) - before
    before = _rss_bytes()
    for _ in range(steps):
        bench.step(variant)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before


def cpu_peak_memory(argv: list[str], variant: str) -> int:
    """Run ``peak_memory`` for one variant in a fresh process (a process's peak RSS never falls)."""
    out = subprocess.run([sys.executable, __file__, *argv, "--memory-of", variant],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "scenes_quick.yaml"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="32", choices=["32", "bf16", "16"])
    parser.add_argument("--batch", type=int, default=128, help="images per step (2x rows)")
    parser.add_argument("--blocks", type=int, default=20, help="blocks per variant")
    parser.add_argument("--steps", type=int, default=1, help="steps per block")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-of", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--gates", nargs="+", metavar="NAME=OVERRIDE[,OVERRIDE]",
                        help="instead of pyro vs plain: each gate choice's step time against ste's")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    if args.gates:
        compare_gates(args)
        return
    bench = Bench(args)

    if args.memory_of:
        print(json.dumps({"peak_bytes": peak_memory(bench, args.memory_of, args.warmup + 1)}))
        return

    with torch.no_grad():
        values = {v: bench.loss(v).item() for v in VARIANTS}
    gap = abs(values["pyro"] - values["plain"])
    print(f"loss at the start: pyro {values['pyro']:.6f}  plain {values['plain']:.6f}  |diff| {gap:.2e}")
    if gap > 1e-4 * max(1.0, abs(values["plain"])):
        raise SystemExit("the two losses differ: the comparison would not be like for like")
    for variant in VARIANTS:
        for _ in range(args.warmup):
            bench.step(variant)

    times = {v: [] for v in VARIANTS}
    cpu_times = {v: [] for v in VARIANTS}
    for block in range(args.blocks):
        for variant in (VARIANTS if block % 2 == 0 else VARIANTS[::-1]):
            wall, cpu = bench.seconds_per_step(variant, args.steps)
            times[variant].append(wall)
            cpu_times[variant].append(cpu)
    ratios = [p / q for p, q in zip(times["pyro"], times["plain"])]
    cpu_ratios = [p / q for p, q in zip(cpu_times["pyro"], cpu_times["plain"])]
    print(f"device {bench.device}, precision {args.precision}, backbone {bench.net.cfg.model.backbone}, "
          f"batch {args.batch}, {args.blocks} blocks x {args.steps} steps")
    for variant in VARIANTS:
        print(f"{variant:>6}: median {1e3 * statistics.median(times[variant]):8.1f} ms/step  "
              f"(blocks: {', '.join(f'{1e3 * t:.0f}' for t in times[variant])})")

    if bench.device.type == "cuda":
        peaks = {v: peak_memory(bench, v, args.warmup + 1) for v in VARIANTS}
        what = "CUDA max_memory_allocated above the resting state"
    else:
        peaks = {v: cpu_peak_memory(argv, v) for v in VARIANTS}
        what = "peak RSS above the resident set before the first step, fresh process per variant"
    print(f"peak memory ({what}): " + ", ".join(f"{v} {peaks[v] / 2**20:.1f} MiB" for v in VARIANTS))
    print(f"ratio of the fastest steps: {min(times['pyro']) / min(times['plain']):.3f}; "
          f"median ratio of process CPU time: {statistics.median(cpu_ratios):.3f}")
    print(f"median ratio pyro/plain: {statistics.median(ratios):.3f} (target <= 1.05; "
          f"block ratios {min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
