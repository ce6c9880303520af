"""Experiments: grids of runs from one YAML file — ablation grids (``bayesncl-ablate``) and result
suites (``bayesncl-reproduce``) — with their tables and figures.

Both commands share one implementation of reading the file (:mod:`.grid_file`), naming cells
(:mod:`.grid_points`), training each one unless it is finished (:mod:`.cells`), reading what a finished run left
(:mod:`.run_results`), mean ± sd over seeds (:mod:`.stats`) and saving figures (:mod:`.figures`).
Modules here may import training, evaluation, inference, storage, data and config; nothing but
the command-line layer imports them.
"""
