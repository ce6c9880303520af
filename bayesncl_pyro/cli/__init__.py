"""Console commands, one module per command (``bayesncl-train``, ``-eval``, ``-inspect``,
``-report``, ``-ablate``, ``-reproduce``, ``-browse``), each a thin argparse layer over the library.

The top of the import graph: commands may import any other subpackage, and nothing imports
them. Heavy modules are imported inside ``main`` after the arguments are parsed, so ``--help``
answers at once. Every command turns a user's mistake into one line on stderr and exit code 2
(:func:`.guard.guarded`).
"""
