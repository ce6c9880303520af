"""The optimisation conflict, measured on ``scenes`` runs with per-epoch checkpoints
(:mod:`bayesncl_pyro.evaluation.gradient_conflict` for the definitions).

    python scripts/conflict.py RUN_DIR_OR_FOLDER... [--out runs/conflict] [--figure docs/results/conflict.png]
                               [--method bayesncl_ste] [--against ncl] [--batches 6] [--batch-size N]
                               [--epochs 0 2 4 ...]

Every run (a folder given, or every run under it whose data is ``scenes`` and which keeps
``epoch_NNNN.pt`` checkpoints) is read, never written: its initial network and each epoch
checkpoint get the conflict statistics on the same fixed batches, written to
``OUT/<method>_seed<seed>.json`` (a checkpoint measured before with the same batch settings, its
file unchanged, is kept, so a run still training can be measured again as it goes; ``--force``
measures the chosen epochs again). A result file never loses a measurement: the epochs measured
now are merged into those it holds (``--epochs 1`` adds or renews epoch 1, nothing else), and a
file of another run or other batch settings is refused unless ``--force`` replaces it. Then
``OUT/summary.json`` and
``OUT/summary.md`` (``--method`` against ``--against``, paired by seed, 95 % t intervals) and the
figure (``--figure``, default ``OUT/conflict.png``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from bayesncl_pyro.cli.guard import bounded_int, guarded, positive_int
from bayesncl_pyro.config.errors import ConfigError, StorageError
from bayesncl_pyro.storage import run_directory
from bayesncl_pyro.storage.atomic import atomic_write_json, atomic_write_text, read_json


def parse(argv):
    parser = argparse.ArgumentParser(prog="conflict.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, or folders holding runs")
    parser.add_argument("--out", default="runs/conflict", help="where the per-run results and the summary go")
    parser.add_argument("--figure", default=None, help="the PNG figure (default OUT/conflict.png)")
    parser.add_argument("--method", default="bayesncl_ste", help="the method compared (default bayesncl_ste)")
    parser.add_argument("--against", default="ncl", help="the method it is compared against (default ncl)")
    parser.add_argument("--batches", type=bounded_int(1, MAX_BATCHES), default=6,
                        help="fixed two-view batches per checkpoint (default 6)")
    parser.add_argument("--batch-size", type=bounded_int(2, MAX_BATCH_SIZE), default=None,
                        help="images per batch (default: the run's)")
    parser.add_argument("--batch-seed", type=bounded_int(0, 2**32 - 1), default=0,
                        help="seed of the fixed batches (default 0)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--epochs", type=bounded_int(0, 10**6), nargs="+", default=None,
                        help="measure only these epochs (0 = the initial network; default every checkpoint)")
    parser.add_argument("--force", action="store_true", help="measure again even where a result is kept")
    args = parser.parse_args(argv)
    if args.method == args.against:
        parser.error(f"--method and --against are both {args.method!r}; allowed: two different methods")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out} is a file; allowed: a folder (new or holding earlier results)")
    return args


MAX_BATCHES = 10_000
MAX_BATCH_SIZE = 65_536


def read_result(path: Path) -> dict | None:
    """The result file ``path`` of an earlier measurement (None when there is none); one clear
    error when it is not one."""
    kept = read_json(path, "conflict result")
    if kept is None:
        return None
    if not isinstance(kept, dict) or not isinstance(kept.get("checkpoints"), list) or not all(
            isinstance(entry, dict) and "checkpoint" in entry for entry in kept["checkpoints"]):
        raise StorageError(f"conflict result {path} is not a result of this script (no list of checkpoint "
                           "entries); move it away, or choose another --out")
    return kept


def merge_checkpoints(earlier: list[dict], measured: list[dict]) -> list[dict]:
    """The entries of ``earlier`` with those ``measured`` now in place of the same checkpoint's,
    oldest epoch first: a result file keeps every measurement it held."""
    merged = {entry["checkpoint"]: entry for entry in earlier}
    merged.update((entry["checkpoint"], entry) for entry in measured)
    return sorted(merged.values(), key=lambda entry: (entry.get("epoch", -1), str(entry["checkpoint"])))


def find_runs(paths: list[str]) -> list[Path]:
    """The run directories named, and those under each folder named that is not a run itself:
    scenes runs with per-epoch checkpoints."""
    runs = []
    for given in map(Path, paths):
        if not given.is_dir():
            raise ConfigError(f"RUN_DIR={given} is not a directory; allowed: a run directory or a folder of runs")
        if (given / run_directory.CONFIG_FILE).is_file():
            runs.append(given)
            continue
        found = [c.parent for c in sorted(given.rglob(run_directory.CONFIG_FILE))
                 if run_directory.epoch_checkpoints(c.parent)
                 and run_directory.read_config(c.parent).data.name == "scenes"]
        if not found:
            raise ConfigError(f"{given} holds no scenes run with epoch_NNNN.pt checkpoints")
        runs.extend(found)
    return runs


def main(argv=None) -> int:
    args = parse(argv)
    import torch

    from bayesncl_pyro.evaluation.gradient_conflict import measure_run, method_name
    from bayesncl_pyro.experiments import conflict_comparison as cc

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = []
    for run in find_runs(args.runs):
        cfg = run_directory.read_config(run)
        path = out / f"{method_name(cfg)}_seed{cfg.train.seed}.json"
        kept = read_result(path)
        earlier: list[dict] = []
        if kept is not None:
            same = Path(str(kept.get("run"))).resolve() == run.resolve() and \
                (kept.get("batches"), kept.get("batch_seed")) == (args.batches, args.batch_seed) and \
                args.batch_size in (None, kept.get("batch_size"))
            if not same and not args.force:
                raise ConfigError(
                    f"{path} holds measurements of {kept.get('run')} with batches={kept.get('batches')}, "
                    f"batch_seed={kept.get('batch_seed')}, batch_size={kept.get('batch_size')}, not of {run} with "
                    f"these settings; --force replaces them, or choose another --out")
            earlier = kept["checkpoints"] if same else []
        known = None if args.force else earlier
        partial = {"run": str(run), "method": method_name(cfg), "seed": cfg.train.seed, "batches": args.batches,
                   "batch_seed": args.batch_seed, "batch_size": args.batch_size, "partial": True,
                   "checkpoints": list(earlier)}

        def save_partial(entry, partial=partial, path=path):
            partial["checkpoints"] = merge_checkpoints(partial["checkpoints"], [entry])
            atomic_write_json(path, partial)

        result = measure_run(run, args.batches, args.batch_size, args.batch_seed, known=known, epochs=args.epochs,
                             progress=lambda items, p=path: tqdm(items, desc=p.stem, unit="checkpoint"),
                             measured_one=save_partial)
        result["checkpoints"] = merge_checkpoints(earlier, result["checkpoints"])
        atomic_write_json(path, result)
        results.append(read_json(path, "conflict result"))
        print(f"wrote {path}", file=sys.stderr)
    methods = {r["method"] for r in results}
    if not {args.method, args.against} <= methods:
        print(f"measured {', '.join(sorted(methods))}; no comparison of {args.method} against {args.against}",
              file=sys.stderr)
        return 0
    paired = [r for r in results if r["method"] in (args.method, args.against)]
    rows = cc.comparisons(paired, args.method, args.against, cc.TABLED)
    atomic_write_json(out / "summary.json", {"method": args.method, "against": args.against,
                                             "runs": [r["run"] for r in paired], "comparisons": rows,
                                             "levels": cc.level_means(paired)})
    atomic_write_text(out / "summary.md", cc.markdown_table(rows))
    figure = cc.plot_conflict(paired, args.method, args.against, args.figure or out / "conflict.png")
    print(cc.markdown_table(rows))
    print(f"wrote {out / 'summary.json'}, {out / 'summary.md'} and {figure}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main)(sys.argv[1:]))
