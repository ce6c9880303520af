"""An ablation file read and planned: the spec (base config, overrides, grid axes, true-ELBO
settings) and its cells, each with its validated config or the reason it is skipped. Imports no
torch, so that ``bayesncl-ablate`` names a bad file or value before loading what trains.
Running the cells is :mod:`.ablation`."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from bayesncl_pyro.config import Config, load_config
from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.experiments.grid_file import GridFile, TrueElboSettings
from bayesncl_pyro.experiments.grid_points import cell_name, point_overrides

ALLOWED_KEYS = ("base", "out_dir", "overrides", "grid", "true_elbo")


@dataclass
class AblationSpec:
    """What the YAML file says, with paths resolved."""

    base: Path | None
    out_dir: Path
    overrides: list[str] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    true_elbo: TrueElboSettings = field(default_factory=TrueElboSettings)


@dataclass
class Cell:
    name: str
    axes: dict[str, Any]
    directory: Path
    overrides: list[str]
    skip_reason: str | None = None
    cfg: Config | None = None
    true_elbo: TrueElboSettings = field(default_factory=TrueElboSettings)


def load_spec(path: str | Path, out_dir: str | Path | None = None, overrides: Sequence[str] = ()) -> AblationSpec:
    """Read and check an ablation YAML file; ``out_dir`` replaces the file's ``out_dir`` and
    ``overrides`` (``key=value``, e.g. from the command line) are applied to every cell after
    the file's own."""
    file = GridFile(path, "ablation file", ALLOWED_KEYS)
    return AblationSpec(
        base=file.base(),
        out_dir=file.out_dir(out_dir),
        overrides=[*file.overrides(file.tree.get("overrides"), "overrides"),
                   *file.overrides(list(overrides), "command-line overrides")],
        grid=file.axes(file.tree.get("grid"), "grid"),
        true_elbo=file.true_elbo(),
    )


def plan_cells(spec: AblationSpec) -> list[Cell]:
    """Every cell of the grid, in grid order, with its overrides; invalid configs carry the reason."""
    cells = []
    for values in itertools.product(*spec.grid.values()):
        axes = dict(zip(spec.grid, values))
        directory = spec.out_dir / cell_name(axes)
        overrides = [*spec.overrides, *point_overrides(axes), f"train.out_dir={directory}"]
        cell = Cell(cell_name(axes), axes, directory, overrides, true_elbo=spec.true_elbo)
        try:
            cell.cfg = load_config(spec.base, overrides)
        except ConfigError as exc:
            cell.skip_reason = str(exc)
        cells.append(cell)
    return cells
