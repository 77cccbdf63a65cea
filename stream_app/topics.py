"""The pipeline's Kafka topics as Faust topic objects, shared by all stage agents.

Values travel as raw bytes (UTF-8 JSON) and are decoded by each stage itself, so a
malformed message reaches the stage's dead-letter path instead of crashing a
deserializer inside Faust.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust

from stream_app import metrics
from stream_app.records import DeadLetter, reason_kind
from stream_app.settings import Settings


@dataclass(frozen=True)
class PipelineTopics:
    raw: faust.TopicT
    clean: faust.TopicT
    classified: faust.TopicT
    dlq: faust.TopicT
    alerts: faust.TopicT
    provider_calls: faust.TopicT
    decisions: faust.TopicT
    windows: faust.TopicT

    @classmethod
    def declare(cls, app: faust.App, settings: Settings) -> "PipelineTopics":
        def topic(name: str) -> faust.TopicT:
            return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                             value_serializer="raw", partitions=settings.partitions)

        return cls(raw=topic(settings.topic_raw), clean=topic(settings.topic_clean),
                   classified=topic(settings.topic_classified), dlq=topic(settings.topic_dlq),
                   alerts=topic(settings.topic_alerts),
                   provider_calls=topic(settings.topic_provider_calls),
                   decisions=topic(settings.topic_decisions),
                   windows=topic(settings.topic_windows))

    async def send_dead_letter(self, dead: DeadLetter) -> None:
        metrics.DEAD_LETTERS.labels(dead.stage, reason_kind(dead.reason)).inc()
        await self.dlq.send(key=(dead.tweet_id or dead.dead_letter_id).encode(),
                            value=dead.to_json())
