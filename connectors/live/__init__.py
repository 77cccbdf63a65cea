"""Live connectors (issue 3): the X API v2 filtered stream and Mastodon timelines, into
``tweets.raw`` without losing their place across reconnects and restarts.

- :mod:`.stream`: events, the reconnecting HTTP line stream (stall detection).
- :mod:`.backoff`: X's documented reconnect delays.
- :mod:`.x_stream`, :mod:`.mastodon`: the two networks (client, parsing, conversion).
- :mod:`.runner`: validate, deduplicate, produce, count, checkpoint, stop on signals.
- :mod:`.checkpoint`: the position file under ``DATA_DIR/connectors/``.
- :mod:`.metrics`: ``dallosh_stream_*`` Prometheus metrics.
"""
