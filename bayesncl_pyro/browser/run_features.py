"""What the browser shows of one run, per test image, gathered from its run directory.

Features come from the trained network itself (``load_trained`` + ``extract_split`` on the test
split), not from ``eval.json``, which holds only aggregates. The gate-posterior draws come from
the run's ArviZ export ``gates.nc`` when it belongs to the same checkpoint; otherwise
``bayesncl-inspect`` runs first and writes it (with its figures), as the user would.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from bayesncl_pyro.browser.posterior_source import PosteriorDraws, read_draws
from bayesncl_pyro.config.errors import DataError
from bayesncl_pyro.evaluation.evaluate import extract_split
from bayesncl_pyro.evaluation.gate_posterior import NETCDF_FILE, inspect_loaded, load_netcdf
from bayesncl_pyro.evaluation.trained_run import TrainedRun, load_trained

INSPECT_DRAWS = 200
INSPECT_CHAINS = 2


@dataclass
class RunFeatures:
    """One run on its N test images with D output dimensions and C classes.

    gated [N, D]: the SPEC §6 features normalize(z ⊙ hard gate) (normalize(z) without gates);
    z [N, D]: the projector output before the gate; gate_probs [N, D] q(gate = 1 | x) and gate
    [N, D] the hard test-time gate (None for an ungated run); labels [N]; images uint8
    [N, 3, H, W]; factors / factor_names: the dataset's known factors per image (``scenes``);
    draws: the gate posterior (None without gates); info: what the page says about the run.
    """

    label: str
    info: dict[str, Any]
    gated: Tensor
    z: Tensor
    labels: Tensor
    classes: list[str]
    images: Tensor
    gate_probs: Tensor | None = None
    gate: Tensor | None = None
    draws: PosteriorDraws | None = None
    factors: dict[str, Tensor] = field(default_factory=dict)
    factor_names: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, d = self.gated.shape
        shapes = {"z": self.z, "gate_probs": self.gate_probs, "gate": self.gate}
        wrong = [f"{name} {tuple(t.shape)}" for name, t in shapes.items() if t is not None and t.shape != (n, d)]
        if self.labels.shape != (n,) or self.images.shape[0] != n:
            wrong.append(f"labels {tuple(self.labels.shape)}, images {tuple(self.images.shape)}")
        if wrong:
            raise DataError(f"run {self.label}: features are [{n}, {d}] but {', '.join(wrong)}")

    @property
    def num_images(self) -> int:
        return self.gated.shape[0]

    @property
    def num_dims(self) -> int:
        return self.gated.shape[1]

    @property
    def has_gates(self) -> bool:
        return self.gate is not None


def run_info(run: TrainedRun) -> dict[str, Any]:
    cfg = run.cfg
    gated = cfg.gate.prior != "none"
    return {"path": str(run.path), "dataset": cfg.data.name, "prior": cfg.gate.prior,
            "estimator": cfg.gate.estimator if gated else None, "threshold": cfg.gate.threshold if gated else None,
            "nonneg": cfg.model.nonneg,
            "backbone": cfg.model.backbone, "step": run.step, "seed": cfg.train.seed}


def posterior_draws(run: TrainedRun, num_images: int, num_dims: int, progress: bool, seed: int = 0) -> PosteriorDraws:
    """The draws of ``gates.nc`` when they belong to this checkpoint (its recorded step is the
    checkpoint's); otherwise (another step, no step, a damaged file) run the inspection, which
    rewrites ``gates.nc`` and its figures, and take its draws."""
    netcdf = Path(run.path) / NETCDF_FILE
    if netcdf.is_file():
        try:
            draws = read_draws(load_netcdf(netcdf))
        except Exception:  # a damaged or foreign gates.nc is drawn again, not shown
            draws = None
        if draws is not None and draws.step is not None \
                and draws.fits(run.step, num_dims, run.test_set.num_classes, num_images):
            return draws
    inspection = inspect_loaded(run, INSPECT_DRAWS, INSPECT_CHAINS, seed, top_dims=8, top_images=8, progress=progress)
    return read_draws(inspection.idata)


def collect_run(path: str | Path, device: str | None = None, progress: bool = True,
                label: str | None = None) -> RunFeatures:
    """Load the run in ``path`` and gather its test features and gate posterior."""
    run = load_trained(path, device=device)
    test = extract_split(run, run.test_set, "test features", progress)
    has_gates = "gate" in test
    draws = posterior_draws(run, *test["gated"].shape, progress) if has_gates else None
    return RunFeatures(
        label=label or Path(path).name, info=run_info(run), gated=test["gated"], z=test["z"],
        labels=test["labels"], classes=list(run.test_set.classes), images=run.test_set.images,
        gate_probs=test.get("gate_probs"), gate=test.get("gate"), draws=draws,
        factors=dict(run.test_set.factors), factor_names=dict(run.test_set.factor_names),
    )
