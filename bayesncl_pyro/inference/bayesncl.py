"""BayesNCL: backbone, projector, non-negativity map and the Pyro model/guide pair of the gates.

The backbone runs once per step; its features feed the model (through z) and the guide (through
the gate logits). The loss is ``TraceMeanField_ELBO().differentiable_loss(model, guide, ...)``:
with the registered analytic KL this is exactly InfoNCE + λ · mean_rows Σ_d KL (SPEC §3).

Two departures from Pyro idiom, on purpose: the model and guide take already computed tensors
(z, gate logits) rather than data, because the PyTorch encoder runs once per step outside SVI;
and the contrastive term's value is read back through :class:`RecordedLoss` after the ELBO, since
Pyro's loss returns only the sum and the log needs InfoNCE and KL apart.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from typing import Optional

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch import nn

from bayesncl_pyro.config import Config
from bayesncl_pyro.config.choices import BACKBONES, NONNEG, PRIORS
from bayesncl_pyro.inference.contrastive import InfoNCE, RecordedLoss, two_view_ids
from bayesncl_pyro.inference.elbo import make_elbo
from bayesncl_pyro.inference.negatives import Negatives, local_batch
from bayesncl_pyro.inference.plates import at_least_float32
from bayesncl_pyro.networks.projector import projector


@dataclass
class StepOutput:
    """What one training step computes. ``loss`` is the negative ELBO [], ``infonce`` its
    contrastive term, ``kl`` the rest (λ-weighted); h [2B, F], z [2B, D], gate_logits [2B, D] (None
    without gates), ``open_rate`` the share of hard gates open []; ``probe_logits`` [2B, C] is
    filled in by the training step module (the online classifier), None otherwise."""

    loss: torch.Tensor
    infonce: torch.Tensor
    kl: torch.Tensor
    h: torch.Tensor
    z: torch.Tensor
    gate_logits: Optional[torch.Tensor]
    open_rate: Optional[torch.Tensor]
    probe_logits: Optional[torch.Tensor] = None


# DistributedDataParallel finds the tensors of a module's output through torch's pytree; a
# dataclass must be registered to be looked into.
pytree.register_pytree_node(
    StepOutput,
    lambda out: ([getattr(out, f.name) for f in fields(StepOutput)], None),
    lambda values, _: StepOutput(*values),
)


class BayesNCL(nn.Module):
    """The whole network of one run. ``negatives`` says where InfoNCE takes its negatives from."""

    def __init__(self, cfg: Config, negatives: Negatives = local_batch):
        super().__init__()
        m, g = cfg.model, cfg.gate
        self.cfg = cfg
        self.backbone = BACKBONES.get(m.backbone)(width=m.convnet_width)
        feat_dim = self.backbone.out_dim
        self.projector = projector(feat_dim, m.proj_hidden, m.proj_dim)
        self.nonneg = NONNEG.get(m.nonneg)
        family = PRIORS.get(g.prior)
        self.model = family.model(g)
        self.guide = family.guide(feat_dim, m.proj_dim, g)
        self.contrastive = InfoNCE(m.temperature, negatives)
        self.elbo = make_elbo(self.guide, g)

    @property
    def feature_dim(self) -> int:
        return self.backbone.out_dim

    def encode(self, x: torch.Tensor) -> dict[str, Optional[torch.Tensor]]:
        """x: [N, 3, S, S] -> h [N, F] (backbone), z [N, D] (after nonneg), gate_logits [N, D] or None."""
        h = self.backbone(x)
        z = self.nonneg(self.projector(h))
        return {"h": h, "z": z, "gate_logits": self.guide.gate_logits(h)}

    def negative_elbo(self, z: torch.Tensor, gate_logits: Optional[torch.Tensor],
                      ids: torch.Tensor) -> tuple[torch.Tensor, RecordedLoss]:
        """The differentiable negative ELBO of rows ``z`` [R, D] with instance ids [R]."""
        term = RecordedLoss(functools.partial(self.contrastive, ids=ids))
        z = at_least_float32(z)
        logits = None if gate_logits is None else at_least_float32(gate_logits)
        with torch.autocast(device_type=z.device.type, enabled=False):
            loss = self.elbo.differentiable_loss(self.model, self.guide, z, logits, term)
        return loss, term

    def step(self, x1: torch.Tensor, x2: torch.Tensor) -> StepOutput:
        """Two views [B, 3, S, S] each -> the loss and what to log; the backbone runs once on 2B rows."""
        batch = x1.shape[0]
        out = self.encode(torch.cat([x1, x2]))
        ids = two_view_ids(batch, device=x1.device)
        loss, term = self.negative_elbo(out["z"], out["gate_logits"], ids)
        infonce = term.value
        posterior = self.guide.posterior(out["gate_logits"]) if out["gate_logits"] is not None else None
        open_rate = posterior.hard_gate().mean() if posterior is not None else None
        return StepOutput(loss, infonce, loss.detach() - infonce.detach(), out["h"], out["z"],
                          out["gate_logits"], open_rate)

    def loss(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Negative ELBO of one batch of two views, differentiable."""
        return self.step(x1, x2).loss

    @torch.no_grad()
    def features(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Test-time features (SPEC §6): h, z, and ``gated`` = normalize(z ⊙ hard gate)
        (for an ungated model, normalize(z)); ``gate`` is the hard gate where there is one.

        With a ``generator`` (on x's device) also ``gated_sampled`` = normalize(z ⊙ m), the gates
        drawn from q instead of thresholded: m ~ Bern(q(gate = 1 | x)) (for hard-concrete gates,
        whether a gate is non-zero, with its probability; the draws are ``gate_sampled``);
        normalize(z) for an ungated model.
        Without one nothing random is drawn, so the global random state is left alone.
        """
        out = self.encode(x)
        z = out["z"].float()
        result = {"h": out["h"].float(), "z": z}
        if out["gate_logits"] is None:
            result["gated"] = F.normalize(z, dim=1)
            if generator is not None:
                result["gated_sampled"] = result["gated"]
        else:
            posterior = self.guide.posterior(out["gate_logits"])
            gate = posterior.hard_gate()
            result["gate"] = gate
            result["gate_probs"] = posterior.probs
            result["gated"] = F.normalize(z * gate, dim=1)
            if generator is not None:
                drawn = torch.bernoulli(posterior.probs.float(), generator=generator)
                result["gate_sampled"] = drawn
                result["gated_sampled"] = F.normalize(z * drawn, dim=1)
        return result
