"""Draws from the variational gate posterior of a run, as an ArviZ ``InferenceData`` in ``gates.nc``.

Groups and variables (dims in brackets):

- ``posterior``: ``open_rate`` [chain, draw, dim], the test-set gate-open rate: each draw samples
  every test image's gates m ~ Bernoulli(q(gate = 1 | x)) and averages over images;
  ``class_open_rate`` [chain, draw, class, dim], the same averaged within each class; and, for a
  prior with a global per-dimension rate (``beta_bernoulli``), ``pi`` [chain, draw, dim], draws of
  π_d from its Beta(α_d, β_d) posterior (the guide's ``relevance()``).
- ``gate_probs``: ``gate_prob`` [image, dim] = q(gate = 1 | x) for every test image.
- ``observed_data``: ``label`` [image]; ``constant_data``: the dataset's known factors [image]
  (on ``scenes``: background, color, x, y, scale, rotation), with the names of categorical codes
  as coordinates ``<factor>_name`` over ``<factor>_code``.

The draws are independent (not a Markov chain): "chains" only split them into groups, so r-hat
and ESS mean nothing and the summary is ``kind="stats"``. Gates are drawn from Bernoulli(probs)
rather than with the estimator's ``sample()``: the straight-through estimator's sample is the
deterministic hard gate, which would give every draw the same open rate.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.evaluation import plots
from bayesncl_pyro.evaluation.evaluate import extract_split
from bayesncl_pyro.evaluation.markdown import markdown_table
from bayesncl_pyro.evaluation.metrics import ACTIVITY_THRESHOLD
from bayesncl_pyro.evaluation.trained_run import TrainedRun, load_trained
from bayesncl_pyro.storage.atomic import atomic_write_file, atomic_write_text

NETCDF_FILE = "gates.nc"
SUMMARY_CSV = "gates_summary.csv"
SUMMARY_MD = "gates_summary.md"
FOREST_PNG = "gates_forest.png"
HEATMAP_PNG = "gates_class_heatmap.png"
FREQUENCY_PNG = "gates_activation_frequency.png"
TOP_IMAGES_PNG = "gates_top_images.png"
HDI_PROB = 0.94
FOREST_DIMS = 20


def _arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def open_rate_draws(gate_probs: Tensor, labels: Tensor, num_classes: int, draws: int, chains: int,
                    seed: int = 0, progress: bool = False) -> tuple[Tensor, Tensor]:
    """Draws of the open rate per dimension and per (class, dimension).

    gate_probs: [N, D] q(gate = 1 | x); labels: [N] in 0..C-1. Each of the chains × draws draws
    samples m ~ Bernoulli(gate_probs) for all N images independently and averages over images
    (over the images of each class). Returns ([chains, draws, D], [chains, draws, C, D]) on
    gate_probs' device; a class without images gets nan.
    """
    probs = gate_probs.float()
    device = probs.device
    generator = torch.Generator(device=device).manual_seed(seed)
    labels = labels.to(device)
    class_sizes = torch.bincount(labels, minlength=num_classes).to(probs.dtype)
    n, d = probs.shape
    rates = torch.empty(chains * draws, d, device=device)
    class_rates = torch.empty(chains * draws, num_classes, d, device=device)
    for i in tqdm(range(chains * draws), disable=not progress, desc="posterior draws", unit="draw", leave=False):
        gates = torch.bernoulli(probs, generator=generator)
        rates[i] = gates.mean(dim=0)
        sums = torch.zeros(num_classes, d, device=device).index_add_(0, labels, gates)
        class_rates[i] = sums / class_sizes[:, None]
    return rates.reshape(chains, draws, d), class_rates.reshape(chains, draws, num_classes, d)


GLOBAL_POSTERIOR_METHODS = ("relevance", "global_posterior")
"""Guide methods that return q(π_d), a distribution over each dimension's global gate-open rate
(batch shape [D]); the Beta-Bernoulli guide's is ``relevance()``."""


def global_rate_draws(guide: Any, draws: int, chains: int, seed: int = 0) -> Tensor | None:
    """Draws [chains, draws, D] of π_d from the guide's posterior over the global rate, or None for
    a guide without one. The global random state is left as it was."""
    method = next((getattr(guide, name) for name in GLOBAL_POSTERIOR_METHODS if hasattr(guide, name)), None)
    if method is None:
        return None
    with torch.no_grad():
        posterior = method()
        device = posterior.mean.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            return posterior.sample((chains, draws)).detach()


def gate_inference_data(open_rate: Tensor, class_open_rate: Tensor, gate_probs: Tensor, labels: Tensor,
                        class_names: Sequence[str], pi: Tensor | None = None,
                        factors: dict[str, Tensor] | None = None,
                        factor_names: dict[str, list[str]] | None = None,
                        attrs: dict[str, Any] | None = None):
    """Assemble the ``InferenceData`` described in the module docstring from tensors of the shapes
    ``open_rate_draws`` returns, gate_probs [N, D], labels [N], and optional π draws and factors."""
    import xarray as xr

    az = _arviz()

    def array(t: Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()

    chains, draws, d = open_rate.shape
    n = gate_probs.shape[0]
    coords = {"chain": np.arange(chains), "draw": np.arange(draws), "dim": np.arange(d)}
    posterior_vars = {
        "open_rate": (("chain", "draw", "dim"), array(open_rate)),
        "class_open_rate": (("chain", "draw", "class", "dim"), array(class_open_rate)),
    }
    if pi is not None:
        posterior_vars["pi"] = (("chain", "draw", "dim"), array(pi))
    posterior = xr.Dataset(posterior_vars, coords={**coords, "class": list(class_names)},
                           attrs={key: str(value) for key, value in (attrs or {}).items()})
    images = {"image": np.arange(n)}
    gate_group = xr.Dataset({"gate_prob": (("image", "dim"), array(gate_probs))},
                            coords={**images, "dim": np.arange(d)})
    observed = xr.Dataset({"label": (("image",), array(labels))},
                          coords={**images, "class": list(class_names)})
    constant_vars, constant_coords = {}, dict(images)
    for name, values in (factors or {}).items():
        constant_vars[name] = (("image",), array(values))
        if factor_names and name in factor_names:
            constant_coords[f"{name}_code"] = np.arange(len(factor_names[name]))
            constant_coords[f"{name}_name"] = ((f"{name}_code",), list(factor_names[name]))
    groups = {"posterior": posterior, "gate_probs": gate_group, "observed_data": observed}
    if constant_vars:
        groups["constant_data"] = xr.Dataset(constant_vars, coords=constant_coords)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return az.InferenceData(**groups)


def save_netcdf(idata, path: str | Path) -> Path:
    """Write ``idata`` atomically: a reader sees the old file or the new one, never half of one."""
    return atomic_write_file(path, lambda tmp: idata.to_netcdf(str(tmp)))


def load_netcdf(path: str | Path):
    """Read ``gates.nc`` fully into memory (the file is closed afterwards)."""
    az = _arviz()
    idata = az.from_netcdf(str(path))
    for group in idata.groups():
        setattr(idata, group, getattr(idata, group).load())
    return idata


def gate_summary(idata, var_names: Sequence[str] | None = None):
    """``az.summary(kind="stats")`` of the posterior: mean, sd and the 94 % HDI per entry."""
    az = _arviz()
    return az.summary(idata, var_names=list(var_names) if var_names else None, kind="stats", hdi_prob=HDI_PROB,
                      round_to="none")


def summary_markdown(table) -> str:
    """The per-dimension rows (``open_rate``, ``pi``) of a summary DataFrame as Markdown; the
    per-class rows stay in the CSV."""
    rows = [[index, *row] for index, row in zip(table.index, table.itertuples(index=False))
            if not str(index).startswith("class_open_rate")]
    return markdown_table(["entry", *table.columns], rows)


@dataclass
class GateInspection:
    """Paths of what ``inspect_run`` wrote, and the InferenceData itself."""

    idata: Any
    netcdf: Path
    summary_csv: Path
    summary_md: Path
    figures: dict[str, Path]


def top_dimensions(activations: Tensor, count: int) -> Tensor:
    """Indices of at most ``count`` dimensions with the largest mean activation, largest first,
    leaving out dimensions that are never active. activations: [N, D]."""
    means = activations.mean(dim=0)
    order = means.argsort(descending=True)
    order = order[means[order] > 0]
    return order[: min(count, order.numel())]


def forest_dimensions(gate_probs: Tensor, count: int) -> Tensor:
    """``count`` dimensions spread evenly over the ranking by mean q(gate = 1 | x), most open
    first, so that a forest plot shows open, undecided and closed dimensions. gate_probs: [N, D]."""
    order = gate_probs.mean(dim=0).argsort(descending=True)
    positions = torch.linspace(0, order.numel() - 1, min(count, order.numel())).round().long().unique()
    return order[positions]


def most_activating(gated: Tensor, dims: Tensor, count: int) -> Tensor:
    """[K, M] indices of the M images with the largest activation of each of the K ``dims``."""
    return gated[:, dims].T.argsort(dim=1, descending=True)[:, : min(count, gated.shape[0])]


def class_dim_order(class_means: Tensor) -> Tensor:
    """Display order of dimensions for a [C, D] heatmap: grouped by their most open class, the
    most open first within a group."""
    best = class_means.argmax(dim=0)
    peak = class_means.max(dim=0).values
    return torch.as_tensor(np.lexsort((-peak.cpu().numpy(), best.cpu().numpy())))


def inspect_run(path: str | Path, draws: int = 200, chains: int = 2, device: str | None = None,
                seed: int = 0, top_dims: int = 8, top_images: int = 8, progress: bool = True) -> GateInspection:
    """Export the gate posterior of the run in ``path`` and draw its figures, all into the run
    directory. Raises ConfigError for a run without gates."""
    run = load_trained(path, device=device)
    if run.cfg.gate.prior == "none":
        raise ConfigError(f"gate.prior='none' in {run.path}: an ungated run has no gate posterior to inspect; "
                          "allowed: a run with a gated prior")
    return inspect_loaded(run, draws, chains, seed, top_dims, top_images, progress)


def inspect_loaded(run: TrainedRun, draws: int, chains: int, seed: int, top_dims: int, top_images: int,
                   progress: bool) -> GateInspection:
    """``inspect_run`` on a run that is already loaded."""
    if draws < 1 or chains < 1:
        raise ConfigError(f"draws={draws}, chains={chains}: both must be integers >= 1")
    test = extract_split(run, run.test_set, "features (test)", progress)
    classes = run.test_set.classes
    open_rate, class_open_rate = open_rate_draws(test["gate_probs"].to(run.device), test["labels"], len(classes),
                                                 draws, chains, seed, progress)
    pi = global_rate_draws(run.net.guide, draws, chains, seed)
    attrs = {"run": run.path, "step": run.step, "prior": run.cfg.gate.prior, "estimator": run.cfg.gate.estimator,
             "draws": "independent draws from the variational posterior; chains are groups of draws"}
    idata = gate_inference_data(open_rate, class_open_rate, test["gate_probs"], test["labels"], classes, pi,
                                run.test_set.factors, run.test_set.factor_names, attrs)
    directory = Path(run.path)
    netcdf = save_netcdf(idata, directory / NETCDF_FILE)
    table = gate_summary(idata)
    summary_csv = atomic_write_text(directory / SUMMARY_CSV, table.to_csv())
    summary_md = atomic_write_text(directory / SUMMARY_MD, summary_markdown(table))
    posterior_draws = {"open_rate": open_rate.cpu()} | ({"pi": pi.cpu()} if pi is not None else {})
    figures = draw_figures(test, posterior_draws, run.test_set.images, classes, directory, top_dims, top_images)
    return GateInspection(idata, netcdf, summary_csv, summary_md, figures)


def draw_figures(test: dict[str, Tensor], posterior_draws: dict[str, Tensor], images: Tensor,
                 classes: Sequence[str], directory: Path, top_dims: int, top_images: int) -> dict[str, Path]:
    """The four gate figures from the test features of ``features.extract`` (gate_probs, gate,
    gated, z, labels: [N, D] / [N]), posterior draws ([chains, draws, D] per variable) and the
    test images uint8 [N, 3, H, W]."""
    gate_probs, labels, gated = test["gate_probs"], test["labels"], test["gated"]
    figures = {}
    selected = forest_dimensions(gate_probs, FOREST_DIMS)
    forest = {name: values[:, :, selected].numpy() for name, values in posterior_draws.items()}
    figures["forest"] = plots.plot_forest(forest, [f"d{i}" for i in selected.tolist()], directory / FOREST_PNG)
    class_means = torch.stack([gate_probs[labels == c].mean(dim=0) for c in range(len(classes))])
    order = class_dim_order(class_means.nan_to_num(0.0))
    figures["class_heatmap"] = plots.plot_class_heatmap(class_means[:, order].numpy(), classes,
                                                        [f"d{i}" for i in order.tolist()], directory / HEATMAP_PNG)
    frequency = (gated > ACTIVITY_THRESHOLD).double().mean(dim=0)
    figures["activation_frequency"] = plots.plot_activation_frequency(frequency.numpy(), len(labels),
                                                                      directory / FREQUENCY_PNG)
    shown, title = gated, "most activating test images per dimension (gated features)"
    dims = top_dimensions(gated, top_dims)
    if dims.numel() == 0:
        shown, title = test["z"], "most activating test images per dimension (every gate closed: z before the gate)"
        dims = top_dimensions(shown, top_dims)
    if dims.numel():
        picks = most_activating(shown, dims, top_images)
        row_labels = [f"d{d} (open {float(test['gate'][:, d].mean()):.2f})" for d in dims.tolist()]
        figures["top_images"] = plots.plot_top_images(images[picks].numpy(), row_labels,
                                                      directory / TOP_IMAGES_PNG, title=title)
    return figures
