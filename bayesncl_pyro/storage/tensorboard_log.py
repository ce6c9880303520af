"""TensorBoard event files of the metrics log (``train.log=tensorboard``), so a run's curves can be
watched while it trains (``tensorboard --logdir runs``).

Every number of every record written to ``metrics.jsonl`` becomes a scalar of the same name at
the record's ``step``, in event files in the run directory itself (one TensorBoard run per run
directory). A resumed run continues the curves: its writer purges what the crashed run logged
after the checkpoint, as the metrics log cuts those lines. The ``tensorboard`` package is
optional; :meth:`TensorBoardLog.check` says how to install it before a run starts.
"""
from __future__ import annotations

import importlib.util
from numbers import Real
from pathlib import Path
from typing import Any

from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.storage.atomic import storage_error

INSTALL = "pip install 'bayesncl-pyro[tensorboard]'"
NOT_SCALARS = frozenset({"step", "epoch"})
"""Keys of a record that place it rather than measure something."""


class TensorBoardLog:
    """The records of a :class:`~.metrics_log.MetricsLog`, as TensorBoard scalars in ``run``."""

    @staticmethod
    def check() -> None:
        """One ConfigError when the ``tensorboard`` package (what SummaryWriter needs) is missing."""
        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError(f"train.log=tensorboard needs the tensorboard package, which is not installed: "
                              f"{INSTALL} (or train.log=jsonl)")

    def __init__(self, run: Path, resume_step: int | None = None):
        self.check()
        from torch.utils.tensorboard import SummaryWriter

        self.run = run
        # purge_step: events at or after it, from an earlier writer, are dropped by TensorBoard
        purge = None if resume_step is None else resume_step + 1
        try:
            self.writer = SummaryWriter(log_dir=str(run), purge_step=purge)
        except OSError as error:
            raise storage_error(error, run) from None

    def write(self, record: dict[str, Any]) -> None:
        """Each number but ``step`` and ``epoch`` (None, a value not logged, is left out) at
        ``record["step"]``; flushed, so the curve is live (a record per ``train.log_every`` steps)."""
        step = record["step"]
        try:
            for key, value in record.items():
                if key not in NOT_SCALARS and isinstance(value, Real) and not isinstance(value, bool):
                    self.writer.add_scalar(key, value, global_step=step)
            self.writer.flush()
        except OSError as error:
            raise storage_error(error, self.run) from None

    def close(self) -> None:
        try:
            self.writer.close()
        except OSError:  # the failed write was reported already
            pass
