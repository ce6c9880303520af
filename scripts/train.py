"""Train one run: ``python scripts/train.py --config configs/scenes_quick.yaml [key=value ...]``."""
from bayesncl_pyro.cli.train import main

if __name__ == "__main__":
    main()
