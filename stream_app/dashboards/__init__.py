"""Grafana as code: the dashboards, alert rules, contact points and notification
policies of Dallosh, built with grafana-foundation-sdk (11.6 line) and written as the
provisioning files under ``grafana/`` that docker-compose mounts.

``python -m stream_app.dashboards`` regenerates them; ``--check`` fails when the
committed files differ from what the code generates (a test runs it too). Every
ClickHouse query lives in :mod:`stream_app.dashboards.queries`, next to the columns its
panel expects, so a test can run each one against the real schema.
"""
