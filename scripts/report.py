"""One HTML report of one or several runs: ``python scripts/report.py RUN_DIR [RUN_DIR ...] [--out FILE]``
(= ``bayesncl-report``)."""
from bayesncl_pyro.cli.report import main

if __name__ == "__main__":
    main()
