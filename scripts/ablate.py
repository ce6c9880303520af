"""Run an ablation grid: ``python scripts/ablate.py configs/ablations/quick.yaml [--jobs N]``."""
from bayesncl_pyro.cli.ablate import main

if __name__ == "__main__":
    main()
