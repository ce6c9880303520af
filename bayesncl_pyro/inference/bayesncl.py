"""BayesNCL: backbone, projector, non-negativity map and the Pyro model/guide pair of the gates.

The backbone runs once per step; its features feed the model (through z) and the guide (through
the gate logits). The loss is ``TraceMeanField_ELBO().differentiable_loss(model, guide, ...)``:
with the registered analytic KL this is exactly InfoNCE + λ · mean_rows Σ_d KL (SPEC §3).

A trained run comes back with :meth:`BayesNCL.from_run`, in eval mode, with the evaluation
transform it was trained with (:meth:`BayesNCL.preprocess` for raw images), without its dataset.

Two departures from Pyro idiom, on purpose: the model and guide take already computed tensors
(z, gate logits) rather than data, because the PyTorch encoder runs once per step outside SVI;
and the contrastive term's value is read back through :class:`RecordedLoss` after the ELBO, since
Pyro's loss returns only the sum and the log needs InfoNCE and KL apart.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch import nn

from bayesncl_pyro.config import Config
from bayesncl_pyro.config.choices import BACKBONES, NONNEG, PRIORS
from bayesncl_pyro.config.device import resolve_device
from bayesncl_pyro.config.errors import CheckpointError, DataError
from bayesncl_pyro.data.augment import EvalTransform
from bayesncl_pyro.data.image_input import image_batches
from bayesncl_pyro.inference.contrastive import InfoNCE, RecordedLoss, two_view_ids
from bayesncl_pyro.inference.elbo import make_elbo
from bayesncl_pyro.inference.negatives import Negatives, local_batch
from bayesncl_pyro.inference.plates import at_least_float32
from bayesncl_pyro.inference.trained_network import read_saved_network
from bayesncl_pyro.networks.pretrained_weights import load_backbone_weights
from bayesncl_pyro.networks.projector import projector
from bayesncl_pyro.storage.checkpoints import modules_non_finite, restore_modules


@dataclass
class StepOutput:
    """What one training step computes. ``loss`` is the negative ELBO [], ``infonce`` its
    contrastive term, ``kl`` the rest (λ-weighted); h [2B, F], z [2B, D], gate_logits [2B, D] (None
    without gates), ``open_rate`` the hard-gate open share of the batch []; ``probe_logits`` [2B, C] is
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


def gate_widths(cfg: Config):
    """The gate settings with ``gate.hidden=0`` read as ``model.proj_hidden`` (the authors' head)."""
    g = cfg.gate
    return replace(g, hidden=cfg.model.proj_hidden) if g.hidden == 0 else g


class BayesNCL(nn.Module):
    """The whole network of one run. ``negatives`` says where InfoNCE takes its negatives from.

    ``load_weights`` loads ``model.weights`` into the backbone, as a run starts; a network whose
    checkpoint is loaded next skips it. With ``model.freeze_backbone`` the backbone has no
    gradient and stays in eval mode (BatchNorm statistics frozen) whatever ``train()`` is called.
    """

    def __init__(self, cfg: Config, negatives: Negatives = local_batch, load_weights: bool = True):
        super().__init__()
        m, g = cfg.model, cfg.gate
        self.cfg = cfg
        self.backbone = BACKBONES.get(m.backbone)(cfg)
        if m.weights and load_weights:
            load_backbone_weights(self.backbone, m.weights)
        if m.freeze_backbone:
            self.backbone.requires_grad_(False).eval()
        feat_dim = self.backbone.out_dim
        self.projector = projector(feat_dim, m.proj_hidden, m.proj_dim, batchnorm=m.proj_batchnorm)
        self.nonneg = NONNEG.get(m.nonneg)
        family = PRIORS.get(g.prior)
        self.model = family.model(g)
        self.guide = family.guide(feat_dim, m.proj_dim, gate_widths(cfg))
        self.contrastive = InfoNCE(m.temperature, negatives)
        self.elbo = make_elbo(self.guide, g)
        self.eval_transform: Optional[EvalTransform] = None

    @classmethod
    def from_run(cls, run: str | Path, checkpoint: str | Path | None = None, device: str = "cpu") -> "BayesNCL":
        """The trained network of the run directory ``run``, in eval mode, with its config
        (``net.cfg``) and evaluation transform (``net.preprocess``); ``checkpoint`` names another
        checkpoint of the run (``"epoch_0002.pt"``) or a path. Reads no dataset and no
        ``model.weights`` file: everything comes from the run directory."""
        saved = read_saved_network(run, checkpoint)
        net = cls(saved.cfg, load_weights=False)
        restore_modules(saved.state, {"net": net}, saved.checkpoint)
        bad = modules_non_finite({"net": net})
        if bad is not None:
            raise CheckpointError(f"checkpoint {saved.checkpoint} holds NaN or infinite values ({bad}); a network "
                                  "with non-finite weights or buffers is not loaded")
        net.eval_transform = saved.eval_transform
        return net.to(resolve_device(device)).eval()

    def train(self, mode: bool = True) -> "BayesNCL":
        super().train(mode)
        if self.cfg.model.freeze_backbone:
            self.backbone.eval()
        return self

    @property
    def feature_dim(self) -> int:
        return self.backbone.out_dim

    def preprocess(self, images: Any) -> torch.Tensor:
        """Raw images -> the network's input [B, 3, S, S], on its device: exactly the evaluation
        transform of the run (resize to S, scale to [0, 1], normalise with the run's statistics).
        ``images``: a PIL image, a uint8 (0..255) or float ([0, 1]) tensor [3, H, W] or
        [B, 3, H, W], or a list of those; a single image gives a batch of one."""
        if self.eval_transform is None:
            raise DataError("this network has no evaluation transform: load a trained one with "
                            "BayesNCL.from_run(RUN_DIR), or set net.eval_transform = EvalTransform(size, mean, std)")
        device = next(self.parameters()).device
        return torch.cat([self.eval_transform(batch.to(device)) for batch in image_batches(images)])

    def encode(self, x: torch.Tensor) -> dict[str, Optional[torch.Tensor]]:
        """x: [N, 3, S, S] -> h [N, F] (backbone), z [N, D] (after nonneg), gate_logits [N, D] or None."""
        if not x.is_floating_point():
            raise DataError(f"the network takes normalised float images, not {x.dtype}; pass raw images (uint8, "
                            "floats in [0, 1], PIL) through net.preprocess(images) first")
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
        """Test-time features (SPEC §6) of preprocessed images x [N, 3, S, S]: h [N, F], z [N, D],
        and ``gated`` = normalize(z ⊙ hard gate) [N, D]; with gates also ``gate_probs`` (q(gate = 1 | x))
        and ``gate`` (the hard gate), both [N, D]. For an ungated model ``gated`` = normalize(z).

        With a ``generator`` (on x's device) also ``gated_sampled`` = normalize(z ⊙ m), the gates
        drawn from q instead of thresholded: m ~ Bern(q(gate = 1 | x)) (for hard-concrete gates,
        whether a gate is non-zero, with its probability; the draws are ``gate_sampled``);
        normalize(z) for an ungated model. Without one nothing random is drawn, so the global
        random state is left alone.
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
