"""Checks that need a CUDA device (selected with ``pytest -m cuda``; skipped without one): the
linear probe, training in bf16 and the evaluation on the GPU, each against its CPU counterpart."""
from __future__ import annotations

import math

import pytest
import torch

from bayesncl_pyro.evaluation.evaluate import evaluate_run
from bayesncl_pyro.evaluation.linear_probe import select_linear_probe
from bayesncl_pyro.training.loop import train

from .conftest import tiny_run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_linear_probe_on_the_gpu_finds_the_cpu_optimum():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=gen)
    labels = torch.arange(400) % 4
    h = centres[labels] + torch.randn(400, 16, generator=gen)
    cpu = select_linear_probe(h, labels, 4)
    gpu = select_linear_probe(h.cuda(), labels.cuda(), 4)
    assert gpu.probe.converged and cpu.probe.converged
    assert gpu.probe.weight_decay == cpu.probe.weight_decay
    torch.testing.assert_close(torch.softmax(gpu.probe.logits(h.cuda()), 1).cpu(),
                               torch.softmax(cpu.probe.logits(h), 1), rtol=0, atol=1e-4)


@pytest.mark.parametrize("precision", ["32", "bf16"])
def test_training_steps_on_the_gpu(tiny_config, precision):
    cfg = tiny_config("train.device=cuda", f"train.precision={precision}", "train.steps=4", "train.epochs=1")
    summary = train(cfg, progress=False)
    assert summary["steps"] == 4 and math.isfinite(summary["final_loss"])


def test_evaluation_on_the_gpu_matches_the_cpu(tmp_path_factory):
    run = tiny_run(tmp_path_factory, "cuda_eval")
    gpu = evaluate_run(run, device="cuda", progress=False)[0]
    cpu = evaluate_run(tiny_run(tmp_path_factory, "cpu_eval"), device="cpu", progress=False)[0]
    assert gpu["linear_probe"]["converged"]
    assert abs(gpu["linear_probe"]["top1"] - cpu["linear_probe"]["top1"]) <= 2.0
    assert gpu["gates"]["open_rate"] == pytest.approx(cpu["gates"]["open_rate"], abs=0.01)
    assert set(gpu["metrics"]["gated_sampled"]) == set(cpu["metrics"]["gated_sampled"])
