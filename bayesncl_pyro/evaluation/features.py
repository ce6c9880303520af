"""Test-time features of a whole split, computed in batches without gradients."""
from __future__ import annotations

import torch
from torch import nn

from bayesncl_pyro.data.dataset import ImageDataset


@torch.no_grad()
def extract(net, transform: nn.Module, data: ImageDataset, device: torch.device, batch_size: int,
            classifier: nn.Module | None = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Run ``net.features`` over ``data`` in eval mode. Returns CPU tensors keyed like
    ``BayesNCL.features`` plus ``labels`` (and ``logits`` of the online classifier when given);
    ``generator`` (on ``device``) draws the gates of ``gated_sampled``, batch after batch."""
    was_training = net.training
    net.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    try:
        for start in range(0, len(data), batch_size):
            x = transform(data.images[start:start + batch_size].to(device, non_blocking=True))
            out = net.features(x, generator=generator)
            if classifier is not None:
                out["logits"] = classifier(out["h"])
            for key, value in out.items():
                parts.setdefault(key, []).append(value.float().cpu())
    finally:
        net.train(was_training)
    result = {key: torch.cat(values) for key, values in parts.items()}
    result["labels"] = data.labels.clone()
    return result
