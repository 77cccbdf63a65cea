"""The bundled demo dataset: one synthetic day of Free customer-care tweets.

See ``README.md`` next to this file, and ``generate_sample.py`` which regenerates it.
"""

from pathlib import Path

SAMPLE_PATH: Path = Path(__file__).with_name("free_outage_day.csv.gz")

__all__ = ["SAMPLE_PATH"]
