"""Benchmarks behind ``dallosh bench ...``: each writes JSON (``--json PATH``) so results
can be compared run to run. Reference results (quoted in ``docs/``) live in ``bench/results/``."""
