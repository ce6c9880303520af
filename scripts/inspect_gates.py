"""Export and plot the gate posterior of a run: ``python scripts/inspect_gates.py RUN_DIR [--draws 200]
[--chains 2]`` (= ``bayesncl-inspect``)."""
from bayesncl_pyro.cli_eval import inspect_main

if __name__ == "__main__":
    inspect_main()
