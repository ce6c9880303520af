"""What a run keeps on disk: atomic file writes, the run directory (resolved config, environment),
the metrics log and checkpoints. Shared by training, which writes runs, and evaluation, which
reads them; may import only ``config``."""
