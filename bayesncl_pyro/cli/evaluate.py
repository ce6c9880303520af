"""``bayesncl-eval``: downstream and interpretability evaluation of a run on its test split."""
from __future__ import annotations

import argparse
from typing import Sequence

from bayesncl_pyro.cli.guard import Parser, add_run_arguments, guarded


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="bayesncl-eval",
        description="Evaluate a run on its test split: linear probe and k-NN, the SPEC §6 metrics on h, z and "
                    "gated z, and (on scenes) the ground-truth gate check. Writes eval.json and eval.md.")
    add_run_arguments(p)
    p.add_argument("--init", action="store_true",
                   help="evaluate the network at its seeded initialisation instead (eval_init.json/.md)")
    return p


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    """bayesncl-eval RUN_DIR [--init] [--device DEVICE] [--no-progress]"""
    args = parser().parse_args(argv)
    from bayesncl_pyro.evaluation.evaluate import evaluate_run
    from bayesncl_pyro.evaluation.glossary import not_defined

    result, json_path, md_path = evaluate_run(args.run_dir, device=args.device, init=args.init,
                                              progress=not args.no_progress)
    probe = result["linear_probe"]
    line = f"linear probe top-1 {probe['top1']:.2f} %, top-5 {probe['top5']:.2f} %"
    if not probe.get("converged"):
        line += " (probe NOT converged: see eval.md)"
    sc = result["metrics"]["gated"]["semantic_consistency"]
    line += (f"; semantic consistency of gated z {sc:.2f} %" if sc is not None
             else f"; semantic consistency of gated z {not_defined('semantic_consistency')}")
    if result["gates"] is not None:
        line += f"; hard-gate open share {100 * result['gates']['open_rate']:.2f} %"
    print(line)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    main()
