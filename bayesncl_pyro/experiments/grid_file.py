"""Reading the YAML file of a grid of runs (an ablation grid or a result suite).

Both kinds share their fields' meaning and validation: ``base`` (a config file, relative to the
grid file), ``overrides`` (``key=value`` strings applied to every run), grid axes (config keys
mapped to non-empty lists of values), ``true_elbo`` (``samples`` ≥ 64, ``seed`` ≥ 0), ``seeds``
and ``out_dir``. Every error is one :class:`ConfigError` line that names the file and the field.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from bayesncl_pyro.config import check_override_key, read_yaml_mapping
from bayesncl_pyro.config.errors import ConfigError

MIN_TRUE_ELBO_SAMPLES = 64
"""Fewer exact gate draws give a standard error too large for the report's comparisons."""


@dataclass
class TrueElboSettings:
    """How the Monte-Carlo true negative ELBO of each run is measured: ``samples`` exact gate
    draws on the fixed held-out batch made with ``seed``."""

    samples: int = MIN_TRUE_ELBO_SAMPLES
    seed: int = 0


class GridFile:
    """A grid or suite file being read: ``what`` names the kind of file in messages, ``allowed``
    its top-level keys."""

    def __init__(self, path: str | Path, what: str, allowed: Iterable[str]):
        self.path = Path(path)
        self.what = what
        self.tree = read_yaml_mapping(self.path, what)
        unknown = sorted(set(self.tree) - set(allowed))
        if unknown:
            raise self.error(f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.what} {self.path}: {message}")

    def base(self) -> Path | None:
        """The base config file (None: the built-in defaults), resolved against the grid file."""
        base = self.tree.get("base")
        if base is None:
            return None
        path = Path(str(base)).expanduser()
        path = (path if path.is_absolute() else self.path.parent / path).resolve()
        if not path.is_file():
            raise self.error(f"base={base!r} does not exist (looked for {path})")
        return path

    def overrides(self, value: Any, where: str) -> list[str]:
        """A list of ``key=value`` strings whose keys are config fields; ``train.out_dir`` is set
        per run and may not be given."""
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"{where} must be a list of key=value strings; got {value!r}")
        for text in value:
            key, sep, _ = text.partition("=")
            if not sep:
                raise self.error(f"{where}: {text!r} is not of the form key=value")
            self.check_key(key.strip(), where)
        return list(value)

    def named_overrides(self, value: Any, where: str) -> dict[str, list[str]]:
        """A mapping of names (datasets, methods) to override lists."""
        if not isinstance(value, dict) or not value:
            raise self.error(f"{where} must map names to lists of key=value overrides; got {value!r}")
        return {str(name): self.overrides(items, f"{where}.{name}") for name, items in value.items()}

    def axes(self, value: Any, where: str) -> dict[str, list[Any]]:
        """Grid axes: config keys mapped to non-empty lists of values."""
        if not isinstance(value, dict) or not value:
            raise self.error(f"{where} must map config keys to lists of values; got {value!r}")
        axes = {}
        for key, values in value.items():
            self.check_key(str(key), f"{where} axis {key}")
            if not isinstance(values, list) or not values:
                raise self.error(f"{where}.{key} must be a non-empty list of values; got {values!r}")
            axes[str(key)] = list(values)
        return axes

    def check_key(self, key: str, where: str) -> None:
        if key == "train.out_dir":
            raise self.error(f"{where}: train.out_dir is set per run; use out_dir instead")
        try:
            check_override_key(key)
        except ConfigError as exc:
            raise self.error(f"{where}: {exc}") from None

    def true_elbo(self) -> TrueElboSettings:
        value = self.tree.get("true_elbo") or {}
        if not isinstance(value, dict) or set(value) - {"samples", "seed"}:
            raise self.error(f"true_elbo takes samples and seed; got {value!r}")
        samples = value.get("samples", MIN_TRUE_ELBO_SAMPLES)
        if not _is_int(samples) or samples < MIN_TRUE_ELBO_SAMPLES:
            raise self.error(f"true_elbo.samples={samples!r} is not allowed; "
                             f"allowed: an integer >= {MIN_TRUE_ELBO_SAMPLES}")
        seed = value.get("seed", 0)
        if not _is_int(seed) or seed < 0:
            raise self.error(f"true_elbo.seed={seed!r} is not allowed; allowed: an integer >= 0")
        return TrueElboSettings(samples, seed)

    def seeds(self, value: Any, where: str) -> list[int]:
        if not isinstance(value, list) or not value or not all(_is_int(s) and s >= 0 for s in value):
            raise self.error(f"{where} must be a non-empty list of integers >= 0; got {value!r}")
        return list(value)

    def out_dir(self, chosen: str | Path | None, default: str | None = None) -> Path:
        """``chosen`` (a command-line option) over the file's ``out_dir`` over ``default``."""
        out = chosen if chosen is not None else self.tree.get("out_dir") or default
        if not out:
            raise self.error("out_dir is missing (set it in the file or pass --out-dir)")
        return Path(str(out)).expanduser()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
