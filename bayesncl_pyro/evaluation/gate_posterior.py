"""Draws from the variational gate posterior of a run, and from its prior, as an ArviZ
``InferenceData`` in ``gates.nc``; the summary table and the figures of ``bayesncl-inspect``.

Groups and variables (dims in brackets), in ArviZ's schema:

- ``posterior``: ``open_rate`` [chain, draw, dim], the test-set gate-open rate (a fraction): each
  draw samples every test image's gates m ~ Bernoulli(q(gate = 1 | x)) and averages over images;
  ``class_open_rate`` [chain, draw, class, dim], the same averaged within each class; and, for a
  prior with a global per-dimension rate (``beta_bernoulli``), ``pi`` [chain, draw, dim], draws of
  π_d from its Beta(α_d, β_d) posterior (the guide's ``relevance()``).
- ``prior``: the same variables drawn from the prior p(gate) of the run's Pyro model (traced with
  the test images' count and labels), so that ``az.plot_dist_comparison`` and prior-vs-posterior
  forest plots work.
- ``observed_data``: ``label`` [image]; ``constant_data``: the dataset's known factors [image]
  (on ``scenes``: background, color, x, y, scale, rotation), with the names of categorical codes
  as coordinates ``<factor>_name`` over ``<factor>_code``.

Draws of ``class_open_rate`` hold chains x draws x C x D numbers; when that is more than
:data:`CLASS_DRAW_ENTRIES` (many classes), only the first ``CLASS_DRAW_ENTRIES // (chains x C x D)``
draws of each chain (at least one) keep it, and it moves to a group of its own with that shorter
``draw`` coordinate, ``class_posterior`` (``class_prior`` for the prior's), whose attributes say so:
10,000 classes of 128 dimensions would otherwise take 2 GB per group.

and one group that ArviZ's schema does not define (an extension, said so in its attributes):

- ``local_posterior``: ``gate_prob`` [image, dim] = q(gate = 1 | x), the parameter of each test
  image's local variational posterior (the amortized guide's output). It is not a draw, so it has
  no ``chain``/``draw`` dims; its name follows the schema's pattern for variants of the posterior
  (``unconstrained_posterior``).

The draws are independent (not a Markov chain): "chains" only split them into groups, so r-hat,
ESS and MCSE, which diagnose the mixing of Markov chains, do not apply; the summary is
``az.summary(kind="stats")`` and its Markdown page says so. Gates are drawn from Bernoulli(probs)
rather than with the estimator's ``sample()``: the straight-through estimator's sample is the
deterministic hard gate, which would give every draw the same open rate.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from tqdm.auto import tqdm

from bayesncl_pyro.config.choices import PRIORS
from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.evaluation import plots
from bayesncl_pyro.evaluation.dimension_ranking import DIMS_FILE, MIN_ACTIVE_SHARE, DimensionRanking, rank_dimensions
from bayesncl_pyro.evaluation.evaluate import extract_split
from bayesncl_pyro.evaluation.markdown import markdown_table
from bayesncl_pyro.evaluation.provenance import finish_inspection, start_inspection
from bayesncl_pyro.evaluation.trained_run import TrainedRun, load_trained
from bayesncl_pyro.storage.atomic import atomic_write_file, atomic_write_json, atomic_write_text

NETCDF_FILE = "gates.nc"
SUMMARY_CSV = "gates_summary.csv"
SUMMARY_MD = "gates_summary.md"
FOREST_PNG = "gates_forest.png"
HEATMAP_PNG = "gates_class_heatmap.png"
FREQUENCY_PNG = "gates_activation_frequency.png"
TOP_IMAGES_PNG = "gates_top_images.png"
BEST_WORST_PNG = "dims_best_worst.png"
HDI_PROB = 0.94
FOREST_DIMS = 20
CLASS_DRAW_ENTRIES = 2**25
"""At most this many numbers (128 MiB in float32) of ``class_open_rate`` draws per group."""
HEATMAP_MAX_CLASSES = 40
"""The class heatmap shows at most this many classes (rows), named in its title when it leaves some out."""
CLASS_GROUPS = {"posterior": "class_posterior", "prior": "class_prior"}
"""Where ``class_open_rate`` goes when it keeps fewer draws than the other variables."""
LOCAL_POSTERIOR = "local_posterior"
"""The extension group of per-image q(gate = 1 | x)."""
DIAGNOSTICS_NOTE = ("The draws are independent draws from the variational posterior (chains only split them "
                    "into groups), so r-hat, ESS and MCSE, which diagnose the mixing of Markov chains, do not "
                    "apply and are left out: the table is az.summary(kind=\"stats\").")


def _arviz():
    import arviz

    return arviz


def _open_rates(gates: Tensor, labels: Tensor, class_sizes: Tensor) -> tuple[Tensor, Tensor]:
    """Open gates [N, D] (1 = open) -> share open per dimension [D] and per (class, dimension) [C, D]."""
    sums = torch.zeros(class_sizes.numel(), gates.shape[1], device=gates.device).index_add_(0, labels, gates)
    return gates.mean(dim=0), sums / class_sizes[:, None]


def class_draws(draws: int, chains: int, num_classes: int, dims: int) -> int:
    """How many draws per chain keep ``class_open_rate``: all of them, or as many as fit
    :data:`CLASS_DRAW_ENTRIES` (at least one)."""
    per_draw = chains * num_classes * dims
    return draws if draws * per_draw <= CLASS_DRAW_ENTRIES else max(1, CLASS_DRAW_ENTRIES // per_draw)


def open_rate_draws(gate_probs: Tensor, labels: Tensor, num_classes: int, draws: int, chains: int,
                    seed: int = 0, progress: bool = False) -> tuple[Tensor, Tensor]:
    """Draws of the open rate per dimension and per (class, dimension).

    gate_probs: [N, D] q(gate = 1 | x); labels: [N] in 0..C-1. Each of the chains × draws draws
    samples m ~ Bernoulli(gate_probs) for all N images independently and averages over images
    (over the images of each class). Returns ([chains, draws, D], [chains, K, C, D]) on
    gate_probs' device, K = :func:`class_draws` (the first K draws of each chain; K = draws
    unless C x D is large); a class without images gets nan.
    """
    probs = gate_probs.float()
    device = probs.device
    generator = torch.Generator(device=device).manual_seed(seed)
    labels = labels.to(device)
    class_sizes = torch.bincount(labels, minlength=num_classes).to(probs.dtype)
    n, d = probs.shape
    kept = class_draws(draws, chains, num_classes, d)
    rates = torch.empty(chains * draws, d, device=device)
    class_rates = torch.empty(chains * kept, num_classes, d, device=device)
    for i in tqdm(range(chains * draws), disable=not progress, desc="posterior draws of the open rate",
                  unit="draw", leave=False):
        chain, draw = divmod(i, draws)
        rates[i], per_class = _open_rates(torch.bernoulli(probs, generator=generator), labels, class_sizes)
        if draw < kept:
            class_rates[chain * kept + draw] = per_class
    return rates.reshape(chains, draws, d), class_rates.reshape(chains, kept, num_classes, d)


def _no_likelihood(rows: Tensor, **kwargs) -> Tensor:
    """A contrastive term of zero: tracing the model then draws its prior sites alone."""
    return rows.new_zeros(())


def prior_draws(model: Any, labels: Tensor, num_classes: int, dims: int, draws: int, chains: int,
                seed: int = 0, progress: bool = False) -> dict[str, Tensor]:
    """Draws from the prior of a run's Pyro model ``model(z, gate_logits, contrastive)``, of the
    quantities that the posterior group holds, for N = len(labels) images of D = ``dims``.

    Each draw traces the model once (on CPU, with a zero contrastive term): its ``gate`` site
    [N, D] gives the open gates (a gate is open when it is non-zero, as for the posterior), hence
    ``open_rate`` [chains, draws, D] and ``class_open_rate`` [chains, K, C, D] (K =
    :func:`class_draws`: the first K draws of each chain); a latent site of shape [D] (the
    Beta-Bernoulli prior's per-dimension rate) gives ``pi`` [chains, draws, D]. The global random
    state is left as it was.
    """
    labels = labels.cpu()
    class_sizes = torch.bincount(labels, minlength=num_classes).float()
    z = torch.zeros(labels.numel(), dims)
    total = chains * draws
    kept = class_draws(draws, chains, num_classes, dims)
    rates, class_rates = torch.empty(total, dims), torch.empty(chains * kept, num_classes, dims)
    global_rates: list[Tensor] = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for i in tqdm(range(total), disable=not progress, desc="prior draws of the open rate", unit="draw",
                      leave=False):
            trace = poutine.trace(model).get_trace(z, None, _no_likelihood)
            gates = (trace.nodes["gate"]["value"] != 0).float()
            chain, draw = divmod(i, draws)
            rates[i], per_class = _open_rates(gates, labels, class_sizes)
            if draw < kept:
                class_rates[chain * kept + draw] = per_class
            global_rates += [site["value"].float() for name, site in trace.nodes.items()
                             if site["type"] == "sample" and name != "gate" and not site["is_observed"]
                             and not site_is_subsample(site) and tuple(site["value"].shape) == (dims,)][:1]
    result = {"open_rate": rates.reshape(chains, draws, dims),
              "class_open_rate": class_rates.reshape(chains, kept, num_classes, dims)}
    if len(global_rates) == total:
        result["pi"] = torch.stack(global_rates).reshape(chains, draws, dims)
    return result


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
                        attrs: dict[str, Any] | None = None, prior: dict[str, Tensor] | None = None):
    """Assemble the ``InferenceData`` described in the module docstring from tensors of the shapes
    ``open_rate_draws`` returns, gate_probs [N, D], labels [N], and optional π draws, factors and
    prior draws (``prior_draws``' dict)."""
    import pyro
    import xarray as xr
    from arviz.data.base import make_attrs

    def array(t: Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()

    def draws_group(variables: dict[str, Tensor], extra: dict[str, Any] | None = None) -> xr.Dataset:
        first = next(iter(variables.values()))
        chains, draws, d = first.shape[0], first.shape[1], first.shape[-1]
        data = {name: (("chain", "draw", "class", "dim") if value.dim() == 4 else ("chain", "draw", "dim"),
                       array(value)) for name, value in variables.items()}
        coords = {"chain": np.arange(chains), "draw": np.arange(draws), "dim": np.arange(d),
                  "class": list(class_names)}
        return xr.Dataset(data, coords=coords, attrs=make_attrs({key: str(value) for key, value in
                                                                 (extra or {}).items()}, library=pyro))

    def add_draws(name: str, variables: dict[str, Tensor], extra: dict[str, Any] | None) -> None:
        """The group ``name``, with class_open_rate apart when it keeps fewer draws."""
        variables = dict(variables)
        per_class = variables.get("class_open_rate")
        if per_class is not None and per_class.shape[1] != variables["open_rate"].shape[1]:
            del variables["class_open_rate"]
            note = (f"class_open_rate keeps the first {per_class.shape[1]} of the {variables['open_rate'].shape[1]} "
                    f"draws of each chain of the {name} group: {len(class_names)} classes x "
                    f"{per_class.shape[-1]} dims of every draw would exceed {CLASS_DRAW_ENTRIES} numbers")
            groups[CLASS_GROUPS[name]] = draws_group({"class_open_rate": per_class}, {**(extra or {}), "draws": note})
        groups[name] = draws_group(variables, extra)

    n, d = gate_probs.shape
    posterior_vars = {"open_rate": open_rate, "class_open_rate": class_open_rate}
    if pi is not None:
        posterior_vars["pi"] = pi
    groups: dict[str, Any] = {}
    add_draws("posterior", posterior_vars, attrs)
    if prior is not None:
        add_draws("prior", prior, {"draws": "independent draws from the prior p(gate) of the run's model"})
    images = {"image": np.arange(n)}
    groups["observed_data"] = xr.Dataset({"label": (("image",), array(labels))},
                                         coords={**images, "class": list(class_names)}, attrs=make_attrs())
    constant_vars, constant_coords = {}, dict(images)
    for name, values in (factors or {}).items():
        constant_vars[name] = (("image",), array(values))
        if factor_names and name in factor_names:
            constant_coords[f"{name}_code"] = np.arange(len(factor_names[name]))
            constant_coords[f"{name}_name"] = ((f"{name}_code",), list(factor_names[name]))
    if constant_vars:
        groups["constant_data"] = xr.Dataset(constant_vars, coords=constant_coords, attrs=make_attrs())
    groups[LOCAL_POSTERIOR] = xr.Dataset(
        {"gate_prob": (("image", "dim"), array(gate_probs))}, coords={**images, "dim": np.arange(d)},
        attrs=make_attrs({"extension": "a group that the InferenceData schema does not define",
                          "gate_prob": "q(gate = 1 | x) of each test image: the amortized guide's output, "
                                       "the parameter of the image's local posterior (not a draw)"}, library=pyro))
    return _arviz().InferenceData(**groups)


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
    """``az.summary(kind="stats")`` of the posterior: mean, sd and the 94 % HDI per entry (fractions).
    No r-hat, ESS or MCSE: the draws are independent (see :data:`DIAGNOSTICS_NOTE`)."""
    az = _arviz()
    return az.summary(idata, var_names=list(var_names) if var_names else None, kind="stats", hdi_prob=HDI_PROB,
                      round_to="none")


def prior_means(idata) -> dict[str, float]:
    """Summary entry (``open_rate[3]``, ``pi[3]``) -> the prior's mean of it, from the ``prior`` group."""
    if "prior" not in idata.groups():
        return {}
    means = {}
    for name in ("open_rate", "pi"):
        if name in idata.prior:
            values = idata.prior[name].mean(dim=("chain", "draw")).values
            means.update({f"{name}[{d}]": float(v) for d, v in enumerate(values)})
    return means


def summary_markdown(table, prior: dict[str, float] | None = None) -> str:
    """The per-dimension rows (``open_rate``, ``pi``) of a summary DataFrame as a Markdown page in
    % (the CSV keeps fractions and the per-class rows), with the prior's mean beside each row, and
    why the chain diagnostics are left out."""
    prior = prior or {}
    hdi = f"{int(round(100 * HDI_PROB))} % HDI"
    headers = ["entry", "mean (%)", "sd (%)", f"{hdi} low (%)", f"{hdi} high (%)"]
    if prior:
        headers.append("prior mean (%)")
    rows = []
    for index, row in zip(table.index, table.itertuples(index=False)):
        if str(index).startswith("class_open_rate"):
            continue
        cells = [index, *(round(100.0 * float(v), 2) for v in row)]
        if prior:
            cells.append(round(100.0 * prior[index], 2) if index in prior else None)
        rows.append(cells)
    intro = (f"# Gate posterior of `{table.attrs.get('run', '')}`\n\n" if table.attrs.get("run") else "") + (
        "Per dimension: `open_rate[d]`, the posterior open share of dimension d (the share of test images on "
        "which a gate drawn from q is open), and for a Beta-Bernoulli "
        "prior `pi[d]`, the dimension's global open probability; posterior mean, sd and "
        f"{int(round(100 * HDI_PROB))} % HDI, all in %. {DIAGNOSTICS_NOTE} The CSV holds the same table as "
        "fractions (0-1), with the per-class rows.\n\n")
    return intro + markdown_table(headers, rows)


@dataclass
class GateInspection:
    """Paths of what ``inspect_run`` wrote, and the InferenceData itself; an ungated run has no
    InferenceData, summary or gate figures (those fields are None)."""

    idata: Any
    netcdf: Path | None
    summary_csv: Path | None
    summary_md: Path | None
    dims_json: Path
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


def class_mean_rows(values: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """[N, D] values, [N] labels in 0..C-1 -> [C, D] float64 per-class means (nan for a class
    without images), in one pass over the rows."""
    values = values.to(torch.float64)
    sums = torch.zeros(num_classes, values.shape[1], dtype=values.dtype, device=values.device)
    sums.index_add_(0, labels.to(values.device), values)
    sizes = torch.bincount(labels.to(values.device), minlength=num_classes).to(values.dtype)
    return sums / sizes[:, None]


def heatmap_classes(class_means: Tensor, count: int) -> Tensor:
    """Indices (ascending) of the classes a [C, D] heatmap shows: all C when C <= ``count``, else
    the ``count`` classes that are the most open class of the most dimensions (ties: by mean
    over the dimensions, then by index)."""
    num_classes = class_means.shape[0]
    if num_classes <= count:
        return torch.arange(num_classes)
    owned = torch.bincount(class_means.argmax(dim=0), minlength=num_classes).to(torch.float64)
    score = torch.as_tensor(np.lexsort((np.arange(num_classes), -class_means.mean(dim=1).cpu().numpy(),
                                        -owned.cpu().numpy())))
    return score[:count].sort().values


def inspect_run(path: str | Path, draws: int = 200, chains: int = 2, device: str | None = None,
                seed: int = 0, top_dims: int = 8, top_images: int = 8, progress: bool = True) -> GateInspection:
    """Export the gate posterior and prior of the run in ``path`` and draw its figures, all into the
    run directory. An ungated run gets only what does not need gates: ``dims.json`` and the
    figure of its best and worst dimensions; a run whose model has no prior (``gate.prior=learned_mask``)
    gets no ``prior`` group."""
    return inspect_loaded(load_trained(path, device=device), draws, chains, seed, top_dims, top_images, progress)


def inspect_loaded(run: TrainedRun, draws: int, chains: int, seed: int, top_dims: int, top_images: int,
                   progress: bool) -> GateInspection:
    """``inspect_run`` on a run that is already loaded."""
    if draws < 1 or chains < 1:
        raise ConfigError(f"draws={draws}, chains={chains}: both must be integers >= 1")
    test = extract_split(run, run.test_set, "test features", progress)
    directory = Path(run.path)
    start_inspection(directory)
    gated = "gate" in test
    ranking = rank_dimensions(test["gated"], test["labels"], test.get("gate"), "gated z" if gated else "normalize(z)")
    dims_json = atomic_write_json(directory / DIMS_FILE, {"step": run.step, **ranking.to_dict()})
    figures = {}
    if ranking.best:
        figures["best_worst"] = best_worst_figure(test["gated"], ranking, run.test_set.images, directory, top_images)
    if not gated:
        finish_inspection(directory, run.step, [dims_json, *figures.values()])
        return GateInspection(None, None, None, None, dims_json, figures)
    classes = run.test_set.classes
    open_rate, class_open_rate = open_rate_draws(test["gate_probs"].to(run.device), test["labels"], len(classes),
                                                 draws, chains, seed, progress)
    pi = global_rate_draws(run.net.guide, draws, chains, seed)
    prior = prior_draws(run.net.model, test["labels"], len(classes), test["gate_probs"].shape[1], draws, chains,
                        seed, progress) if PRIORS.get(run.cfg.gate.prior).has_prior else None
    attrs = {"run": run.path, "step": run.step, "prior": run.cfg.gate.prior, "estimator": run.cfg.gate.estimator,
             "draws": "independent draws from the variational posterior; chains are groups of draws"}
    idata = gate_inference_data(open_rate, class_open_rate, test["gate_probs"], test["labels"], classes, pi,
                                run.test_set.factors, run.test_set.factor_names, attrs, prior)
    netcdf = save_netcdf(idata, directory / NETCDF_FILE)
    table = gate_summary(idata)
    summary_csv = atomic_write_text(directory / SUMMARY_CSV, table.to_csv())
    table.attrs["run"] = str(run.path)
    summary_md = atomic_write_text(directory / SUMMARY_MD, summary_markdown(table, prior_means(idata)))
    posterior_draws = {"open_rate": open_rate.cpu()} | ({"pi": pi.cpu()} if pi is not None else {})
    figures |= draw_figures(test, posterior_draws, run.test_set.images, classes, directory, top_dims, top_images,
                            prior)
    finish_inspection(directory, run.step, [dims_json, netcdf, summary_csv, summary_md, *figures.values()])
    return GateInspection(idata, netcdf, summary_csv, summary_md, dims_json, figures)


def _percent(value: float) -> str:
    return f"{100 * value:.0f} %"


def best_worst_figure(features: Tensor, ranking: DimensionRanking, images: Tensor, directory: Path,
                      top_images: int) -> Path:
    """The most activating test images of the ranking's best and worst dimensions (one row each)."""
    dims = [*ranking.best, *ranking.worst]
    picks = most_activating(features, torch.tensor(dims), top_images)
    labels = []
    for kind, group in (("best", ranking.best), ("worst", ranking.worst)):
        for place, d in enumerate(group, 1):
            label = (f"{kind} {place}: d{d}\nSC {float(ranking.consistency[d]):.0f} %, "
                     f"active on {_percent(float(ranking.active_share[d]))}")
            if ranking.open_rate is not None:
                label += f"\nhard-gate open share {_percent(float(ranking.open_rate[d]))}"
            labels.append(label)
    title = (f"the {len(ranking.best)} most and {len(ranking.worst)} least class-specific dimensions of "
             f"{ranking.features}\nby semantic consistency (SC) among dimensions active on "
             f"≥ {MIN_ACTIVE_SHARE * 100:g} % of test images;\n"
             f"each row: the test images on which the dimension is largest, largest first")
    return plots.plot_top_images(images[picks].numpy(), labels, directory / BEST_WORST_PNG, title=title,
                                 inches=0.66)


def never_active_parts(test: dict[str, Tensor]) -> dict[str, int]:
    """Why the dimensions that are never active in gated z are: dead in z, the gate never open
    (z alive), or the gate never open where z fires."""
    dead = (test["z"] == 0).all(dim=0)
    never_open = (test["gate"] == 0).all(dim=0)
    never_active = (test["gated"] == 0).all(dim=0)
    return {"dead in z": int(dead.sum()), "gate never open": int((never_open & ~dead).sum()),
            "never open where z fires": int((never_active & ~dead & ~never_open).sum())}


def draw_figures(test: dict[str, Tensor], posterior_draws: dict[str, Tensor], images: Tensor,
                 classes: Sequence[str], directory: Path, top_dims: int, top_images: int,
                 prior: dict[str, Tensor] | None = None) -> dict[str, Path]:
    """The four gate figures from the test features of ``features.extract`` (gate_probs, gate,
    gated, z, labels: [N, D] / [N]), posterior draws ([chains, draws, D] per variable, fractions),
    the prior's draws of the same (or None) and the test images uint8 [N, 3, H, W]. Figures show
    shares in %."""
    gate_probs, labels, gated = test["gate_probs"], test["labels"], test["gated"]
    d = gate_probs.shape[1]
    figures = {}
    selected = forest_dimensions(gate_probs, FOREST_DIMS)
    forest = {name: 100 * values[:, :, selected].numpy() for name, values in posterior_draws.items()}
    prior_forest = None if prior is None else {name: 100 * prior[name][:, :, selected].numpy()
                                               for name in posterior_draws if name in prior}
    shown = "every dimension" if len(selected) == d else (
        f"{len(selected)} of {d} dimensions, evenly spaced in the ranking by mean q(gate = 1 | x), "
        "most open at the top")
    title = (f"posterior open share on the test split: posterior mean, 50 % interval (thick) and "
             f"{int(round(100 * HDI_PROB))} % HDI (thin){', prior in grey' if prior_forest else ''}\n{shown}")
    xlabel = "open_rate: posterior open share, the share of test images whose drawn gate is open (%)"
    if "pi" in posterior_draws:
        xlabel += "; pi: the dimension's global open probability (%)"
    figures["forest"] = plots.plot_forest(forest, [f"d{i}" for i in selected.tolist()], directory / FOREST_PNG,
                                          title=title, xlabel=xlabel, prior_draws=prior_forest)
    class_means = class_mean_rows(gate_probs, labels, len(classes))
    shown = heatmap_classes(class_means.nan_to_num(0.0), HEATMAP_MAX_CLASSES)
    class_means = class_means[shown]
    order = class_dim_order(class_means.nan_to_num(0.0))
    groups = class_means.nan_to_num(0.0).argmax(dim=0)[order]
    left_out = "" if len(shown) == len(classes) else (
        f"\nthe {len(shown)} of {len(classes)} classes that are the most open class of the most dimensions")
    figures["class_heatmap"] = plots.plot_class_heatmap(
        100 * class_means[:, order].numpy(), [plots.literal_text(classes[c]) for c in shown.tolist()],
        [str(i) for i in order.tolist()], groups.tolist(), directory / HEATMAP_PNG,
        title=("mean q(gate = 1 | x) per class and dimension on the test split (%)\ndimensions grouped by the "
               f"class with the highest value (named above, white lines between groups), highest first{left_out}"),
        colorbar_label="mean q(gate = 1 | x) (%)")
    frequency = (gated != 0).double().mean(dim=0)
    figures["activation_frequency"] = plots.plot_activation_frequency(
        frequency.numpy(), len(labels), directory / FREQUENCY_PNG, features="gated z",
        never_active_parts=never_active_parts(test))
    shown_features, features_name = gated, "gated z"
    dims = top_dimensions(gated, top_dims)
    if dims.numel() == 0:
        shown_features, features_name = test["z"], "z (every gate is closed, so z before the gate)"
        dims = top_dimensions(shown_features, top_dims)
    if dims.numel():
        picks = most_activating(shown_features, dims, top_images)
        row_labels = [f"d{d}\nhard-gate open share {_percent(float(test['gate'][:, d].mean()))}" for d in dims.tolist()]
        title = (f"the {dims.numel()} dimensions of {features_name} with the largest mean value, largest first;\n"
                 "each row: the test images on which the dimension is largest, largest first")
        figures["top_images"] = plots.plot_top_images(images[picks].numpy(), row_labels,
                                                      directory / TOP_IMAGES_PNG, title=title)
    return figures
