"""``python -m bayesncl_pyro.train``: the training command (the same as ``bayesncl-train``), kept
at this path so that ``torchrun -m bayesncl_pyro.train`` launches distributed training. The
training library itself is :mod:`bayesncl_pyro.training`."""
from bayesncl_pyro.cli.train import main

if __name__ == "__main__":
    main()
