"""Benchmarks behind ``dallosh bench ...``: each writes JSON (``--json PATH``) so results
can be compared run to run. Reference results of the README live in ``bench/results/``."""
