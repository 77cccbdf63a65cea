"""Faust wiring of the clean stage: ``tweets.raw`` -> ``tweets.clean`` (+ ``tweets.dlq``)."""

from __future__ import annotations

import logging

import faust

from stream_app import metrics
from stream_app.clean.cleaning import STAGE, clean_record
from stream_app.records import DeadLetter
from stream_app.topics import PipelineTopics

log = logging.getLogger(__name__)


def register_clean_agent(app: faust.App, topics: PipelineTopics) -> None:
    @app.agent(topics.raw, name="clean")
    async def clean(stream: faust.StreamT[bytes]) -> None:
        async for payload in stream:
            metrics.MESSAGES_IN.labels(STAGE).inc()
            try:
                result = clean_record(payload)
            except Exception as exc:  # a bug must not silently skip the tweet
                log.exception("clean stage failed on a record; dead-lettering it")
                metrics.ERRORS.labels(STAGE, "internal").inc()
                dead = DeadLetter.build(stage=STAGE, payload=payload,
                                        reason=f"internal error: {type(exc).__name__}: {exc}")
                await topics.send_dead_letter(dead)
                continue
            if result.tweet is not None:
                await topics.clean.send(key=result.tweet.id.encode(), value=result.tweet.to_json())
                metrics.MESSAGES_OUT.labels(STAGE).inc()
            else:
                assert result.dead_letter is not None
                await topics.send_dead_letter(result.dead_letter)
