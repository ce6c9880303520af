"""Build the feature browser of one run, or of two runs side by side, as a static site.

Layout of the output directory::

    index.html, app.js, style.css      the pages (this package's data files)
    data/site.js                        the runs, the test labels, the sprite-sheet layout
    data/images/sheet_<k>.png           thumbnails of the test images
    data/run<r>/table.js                one entry per dimension (the sortable table)
    data/run<r>/dims/<c>.js             details of dimensions c·64 … (c+1)·64 − 1
    data/run<r>/images/<s>.js           features, gates and neighbours of images s·500 …

Everything is loaded with ``<script>`` tags, so the site opens from ``file://`` with no server and
no network; only the table data is loaded when it opens, the rest when a page needs it.
"""
from __future__ import annotations

import datetime
import json
from importlib import resources
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from bayesncl_pyro.browser import dimension_stats as stats
from bayesncl_pyro.browser.matching import check_same_test_split, match_dimensions
from bayesncl_pyro.browser.packing import data_script, pack_array
from bayesncl_pyro.browser.run_features import RunFeatures, collect_run
from bayesncl_pyro.browser.site_data import BrowserOptions, run_records
from bayesncl_pyro.browser.site_directory import MARKER, check_replaceable, replace_directory
from bayesncl_pyro.browser.sprites import write_sprite_sheets
from bayesncl_pyro.config.errors import ConfigError, DataError
from bayesncl_pyro.evaluation import glossary
from bayesncl_pyro.evaluation.provenance import BROWSER_RECORD
from bayesncl_pyro.storage.run_directory import BROWSER_DIR, read_config

ASSETS = ("index.html", "app.js", "style.css")
MAX_RUNS = 2


def asset_text(name: str) -> str:
    return resources.files("bayesncl_pyro.browser").joinpath(name).read_text(encoding="utf-8")


def _run_labels(runs: Sequence[RunFeatures]) -> list[str]:
    """The runs' labels, made distinct by a suffix where two coincide."""
    labels = [run.label for run in runs]
    return [f"{label} ({i + 1})" if labels.count(label) > 1 else label for i, label in enumerate(labels)]


def site_words() -> dict:
    """The glossary's words the pages need: scene factor names with units, and why a quantity of
    the pages can be not defined."""
    keys = ("semantic_consistency", "semantic_entropy_frequency", "majority_share", "entropy", "mean_activation")
    return {"factors": dict(glossary.FACTOR_NAMES), "not_defined": {key: glossary.not_defined(key) for key in keys}}


def site_record(runs: Sequence[RunFeatures], layout, sheets: list[str], options: BrowserOptions) -> dict:
    first = runs[0]
    return {
        "title": "Feature browser: " + " vs ".join(_run_labels(runs)),
        "created": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "runs": [{"key": f"run{r}", "label": label, "dims_per_file": options.dims_per_file,
                  "images_per_file": options.images_per_file, "num_dims": run.num_dims,
                  "dim_files": -(-run.num_dims // options.dims_per_file)}
                 for r, (run, label) in enumerate(zip(runs, _run_labels(runs)))],
        "images": {
            "count": first.num_images, "size": int(first.images.shape[-1]), "classes": first.classes,
            "labels": pack_array(first.labels.numpy(), "u16"),
            "factor_names": first.factor_names,
            "sprite": {"cell": layout.cell, "columns": layout.columns, "per_sheet": layout.per_sheet,
                       "sheets": [f"data/images/{name}" for name in sheets]},
        },
        "words": site_words(),
        "options": {"top_k": options.top_k, "sample_k": options.sample_k, "neighbours": options.neighbours,
                    "shared": options.shared, "coactive": options.coactive, "unsure": list(stats.UNSURE)},
    }


def build_site(runs: Sequence[RunFeatures], out: str | Path, options: BrowserOptions = BrowserOptions(),
               progress: bool = True) -> Path:
    """Write the browser of ``runs`` (one, or two on the same test split) into ``out``."""
    if not 1 <= len(runs) <= MAX_RUNS:
        raise ConfigError(f"{len(runs)} runs given; the browser shows one run or two side by side")
    matches = [None] * len(runs)
    if len(runs) == 2:
        a, b = runs
        check_same_test_split(a.labels, a.images, b.labels, b.images, (a.label, b.label))
        matches = list(match_dimensions(a.gated, b.gated))

    def fill(directory: Path) -> None:
        for name in ASSETS:
            (directory / name).write_text(asset_text(name), encoding="utf-8")
        data = directory / "data"
        layout, sheets = write_sprite_sheets(runs[0].images, data / "images")
        for r, run in enumerate(tqdm(runs, disable=not progress, desc="browser data", unit="run", leave=False)):
            records = run_records(run, options, matches[r], progress)
            if len(runs) == 2:
                records.table["partner_run"] = 1 - r
            folder = data / f"run{r}"
            (folder / "dims").mkdir(parents=True)
            (folder / "images").mkdir()
            (folder / "table.js").write_text(data_script(f"run{r}/table", records.table))
            for c, chunk in enumerate(records.dimension_chunks):
                (folder / "dims" / f"{c}.js").write_text(data_script(f"run{r}/dims/{c}", chunk))
            for s, shard in enumerate(records.image_shards):
                (folder / "images" / f"{s}.js").write_text(data_script(f"run{r}/images/{s}", shard))
        (directory / MARKER).write_text(data_script("site", site_record(runs, layout, sheets, options)))
        (directory / BROWSER_RECORD).write_text(json.dumps(  # which checkpoints the site shows (for the report)
            {"step": runs[0].info.get("step"), "runs": [{"path": run.info.get("path"), "step": run.info.get("step")}
                                                        for run in runs]}, indent=1))

    return replace_directory(out, fill)


def default_out(paths: Sequence[str | Path]) -> Path:
    """``RUN_DIR/browser`` for one run; ``browser`` in the current directory for two."""
    return Path(paths[0]) / BROWSER_DIR if len(paths) == 1 else Path.cwd() / BROWSER_DIR


def browse(paths: Sequence[str | Path], out: str | Path | None = None, device: str | None = None,
           options: BrowserOptions = BrowserOptions(), progress: bool = True) -> Path:
    """``bayesncl-browse``: gather each run (features, gate posterior; running the inspection where
    it is missing) and build the site; returns its directory."""
    if not 1 <= len(paths) <= MAX_RUNS:
        raise ConfigError(f"{len(paths)} run directories given; pass one RUN_DIR, or two to compare side by side")
    if len(paths) == 2:
        datasets = [read_config(p).data.name for p in paths]
        if datasets[0] != datasets[1]:
            raise DataError(f"runs {paths[0]} and {paths[1]} do not share a test split: dataset {datasets[0]!r} vs "
                            f"{datasets[1]!r}; compare runs trained on the same data")
    out = Path(out) if out is not None else default_out(paths)
    check_replaceable(out)
    labels = [Path(p).name or str(p) for p in paths]
    if len(labels) == 2 and labels[0] == labels[1]:
        labels = [f"{Path(p).parent.name}/{Path(p).name}" for p in paths]
    runs = [collect_run(p, device=device, progress=progress, label=label) for p, label in zip(paths, labels)]
    return build_site(runs, out, options, progress)
