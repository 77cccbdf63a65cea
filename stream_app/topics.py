"""The pipeline's Kafka topics as Faust topic objects, shared by all stage agents.

Values travel as raw bytes (UTF-8 JSON) and are decoded by each stage itself, so a
malformed message reaches the stage's dead-letter path instead of crashing a
deserializer inside Faust.

The hot path (every tweet is decoded and encoded once per stage) goes through
:func:`decode` and :func:`encode` here: orjson, several times faster than the standard
library, with the standard library taking over wherever orjson refuses an input, so that
what was accepted, refused or dead-lettered before still is, for the same reason.
:meth:`PipelineTopics.send` hands a record straight to the app's Kafka producer: a
``Topic.send`` builds futures, events and sensor records per message, which cost more
than the clean stage's own work (see ``dallosh bench pipeline``). Delivery is as
before: Faust flushes the producer before it commits the consumed offsets.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import faust
import orjson

from stream_app import metrics
from stream_app.records import DeadLetter, Record, reason_kind
from stream_app.settings import Settings


log = logging.getLogger(__name__)


def decode(payload: bytes) -> Any:
    """A message's JSON value, as ``json.loads`` gives it. Raises what ``json.loads``
    raises on bad input (UnicodeDecodeError, JSONDecodeError, RecursionError), whose
    names end up in dead-letter reasons."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:  # bad input, or what only json accepts (NaN)
        return json.loads(payload)
    if type(data) is not dict:  # not a record: dead-lettered, with json's own words
        return json.loads(payload)
    for value in data.values():
        # orjson reads an integer past 64 bits as a float where json keeps an int (a
        # schema check would then say something else); the records on the hot path
        # (raw and clean tweets) have no float field, so this costs one pass.
        if type(value) is float:
            return json.loads(payload)
    return data


def encode(record: Record) -> bytes:
    """A record as message bytes (the same JSON as :meth:`Record.to_json`)."""
    try:
        return orjson.dumps(record.to_dict())
    except TypeError:  # orjson refuses it (a lone surrogate, an int past 64 bits): as before
        return record.to_json()


def _report_send_failure(sent: "asyncio.Future") -> None:
    """A record the producer gave up on (after its own retries): logged and counted,
    as Faust's ``Topic.send`` did."""
    if not sent.cancelled() and sent.exception() is not None:
        metrics.ERRORS.labels("produce", "send_failed").inc()
        log.error("a record could not be sent to Kafka: %s", sent.exception())


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
    app: faust.App | None = None

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
                   windows=topic(settings.topic_windows), app=app)

    async def send(self, topic: faust.TopicT, key: bytes, value: bytes) -> None:
        """Queue one message on the app's producer (it returns once the record is in a
        batch; the consumed offsets are committed only after the producer is flushed)."""
        assert self.app is not None
        sent = await self.app.producer.send(topic.get_topic_name(), key, value, None, None, None)
        sent.add_done_callback(_report_send_failure)

    async def send_dead_letter(self, dead: DeadLetter) -> None:
        metrics.DEAD_LETTERS.labels(dead.stage, reason_kind(dead.reason)).inc()
        await self.dlq.send(key=(dead.tweet_id or dead.dead_letter_id).encode(),
                            value=dead.to_json())
