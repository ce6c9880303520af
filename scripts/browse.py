"""Build the feature browser of a run: ``python scripts/browse.py RUN_DIR [RUN_DIR] [--out DIR]``
(= ``bayesncl-browse``)."""
from bayesncl_pyro.cli.browse import main

if __name__ == "__main__":
    main()
