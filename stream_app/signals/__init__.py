"""Weak signals: event-time windows over classified tweets, detectors and alerts.

``windows`` (aggregates), ``detectors`` (pure functions over window sums), ``alerts``
(incident grouping, hysteresis), ``engine`` (the deterministic core: watermark,
allowed lateness, revisions), ``agent`` (the thin Faust wrapper), ``evaluation``
(generated timelines with known incidents).
"""
