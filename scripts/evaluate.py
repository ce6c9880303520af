"""Evaluate a run: ``python scripts/evaluate.py RUN_DIR [--init] [--device DEVICE]`` (= ``bayesncl-eval``)."""
from bayesncl_pyro.cli.evaluate import main

if __name__ == "__main__":
    main()
