"""Run a result suite end to end: ``python scripts/reproduce.py cpu`` (= ``bayesncl-reproduce cpu``)."""
from bayesncl_pyro.cli.reproduce import main

if __name__ == "__main__":
    main()
