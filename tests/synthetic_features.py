"""A fabricated run for the feature browser at any size (no network is trained): class-coloured
images with a square, sparse non-negative features in which each dimension prefers one class,
gate probabilities, hard gates and posterior draws, and scenes-like factors."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bayesncl_pyro.browser.posterior_source import PosteriorDraws
from bayesncl_pyro.browser.run_features import RunFeatures
from bayesncl_pyro.evaluation.gate_posterior import open_rate_draws


def synthetic_run(num_images: int, num_dims: int, num_classes: int = 10, seed: int = 0, label: str = "synthetic",
                  draws: int = 50, chains: int = 2) -> RunFeatures:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (num_images,), generator=gen)
    hue = torch.rand(num_classes, 3, generator=gen)
    images = (hue[labels][:, :, None, None] * 160 + 40).expand(num_images, 3, 32, 32).clone()
    corner = torch.randint(0, 22, (num_images, 2), generator=gen)
    rows = torch.arange(32)
    inside = (((rows[None, :] >= corner[:, :1]) & (rows[None, :] < corner[:, :1] + 10))[:, :, None]
              & ((rows[None, :] >= corner[:, 1:]) & (rows[None, :] < corner[:, 1:] + 10))[:, None, :])
    images = torch.where(inside[:, None], torch.full_like(images, 250.0), images).to(torch.uint8)
    preferred = torch.arange(num_dims) % num_classes
    z = torch.rand(num_images, num_dims, generator=gen) * (torch.rand(num_images, num_dims, generator=gen) < 0.2)
    z = z + (labels[:, None] == preferred[None, :]) * torch.rand(num_images, num_dims, generator=gen)
    z[:, ::8] = 0.0  # every eighth dimension never fires
    logits = torch.randn(num_dims, generator=gen)[None, :] * 2 + torch.randn(num_images, num_dims, generator=gen)
    gate_probs = torch.sigmoid(logits)
    gate = (gate_probs > 0.5).float()
    open_rate, class_open_rate = open_rate_draws(gate_probs, labels, num_classes, draws, chains, seed)
    factors = {"background": torch.randint(0, 3, (num_images,), generator=gen),
               "color": torch.randint(0, 4, (num_images,), generator=gen),
               "x": corner[:, 1].float(), "y": corner[:, 0].float(),
               "scale": torch.rand(num_images, generator=gen), "rotation": torch.rand(num_images, generator=gen)}
    info = {"path": "synthetic", "dataset": "synthetic", "prior": "bernoulli", "estimator": "ste", "nonneg": "relu",
            "backbone": "none", "step": 0, "seed": seed}
    return RunFeatures(
        label=label, info=info,
        gated=F.normalize(z * gate, dim=1), z=z, labels=labels, classes=[f"class {c}" for c in range(num_classes)],
        images=images, gate_probs=gate_probs, gate=gate,
        draws=PosteriorDraws(open_rate.numpy(), class_open_rate.numpy(), step=0, num_images=num_images),
        factors=factors,
        factor_names={"background": ["sky", "grass", "sand"], "color": ["red", "green", "blue", "grey"]},
    )
