"""Export and plot the gate posterior of a run: ``python scripts/inspect_gates.py RUN_DIR [--draws 200]
[--chains 2]`` (= ``bayesncl-inspect``)."""
from bayesncl_pyro.cli.inspect_gates import main

if __name__ == "__main__":
    main()
