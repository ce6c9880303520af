"""Evaluate a run: ``python scripts/evaluate.py RUN_DIR [--init] [--device DEVICE]`` (= ``bayesncl-eval``)."""
from bayesncl_pyro.cli_eval import eval_main

if __name__ == "__main__":
    eval_main()
