"""Run a result suite end to end: ``python scripts/reproduce.py cpu`` (= ``bayesncl-reproduce cpu``)."""
from bayesncl_pyro.cli_eval import reproduce_main

if __name__ == "__main__":
    reproduce_main()
