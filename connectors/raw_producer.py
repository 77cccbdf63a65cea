"""The one way connectors put records on Kafka: raw tweets to ``tweets.raw`` (key: tweet
id) and bad input to ``tweets.dlq``, through an idempotent producer.

Sends are pipelined: up to ``window`` records are in flight before we wait for their
acknowledgements, so throughput does not pay one round trip per tweet, and
:meth:`flush` returns only when everything sent so far is durable on the broker.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from stream_app.kafka_admin import KafkaUnavailable, ensure_topics
from stream_app.records import DeadLetter, reason_kind
from stream_app.settings import Settings


@dataclass
class ProducedCounts:
    produced: int = 0
    dead_lettered: int = 0
    dead_letter_reasons: Counter = field(default_factory=Counter)


class RawProducer:
    def __init__(self, settings: Settings, window: int = 5000) -> None:
        self._settings = settings
        self._window = window
        self._in_flight: list[asyncio.Future] = []
        self.counts = ProducedCounts()

    async def __aenter__(self) -> "RawProducer":
        await ensure_topics(self._settings.bootstrap_servers,
                            [self._settings.topic_raw, self._settings.topic_dlq],
                            self._settings.partitions)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._settings.bootstrap_servers, enable_idempotence=True,
            acks="all", linger_ms=20, max_batch_size=512 * 1024)
        try:
            await self._producer.start()
        except KafkaConnectionError as exc:
            await self._producer.stop()
            raise KafkaUnavailable(self._settings.bootstrap_servers, exc) from None
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            if exc_info[0] is None or issubclass(exc_info[0], (KeyboardInterrupt, asyncio.CancelledError)):
                await self.flush()  # what was sent before an interruption still lands
        finally:
            await self._producer.stop()

    async def send_raw(self, record: Mapping[str, Any]) -> None:
        """Send one raw tweet (already validated with ``raw_tweet_problem``)."""
        payload = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
        await self._send(self._settings.topic_raw, str(record["id"]).encode(), payload)
        self.counts.produced += 1

    async def send_dead_letter(self, dead: DeadLetter) -> None:
        await self._send(self._settings.topic_dlq,
                         (dead.tweet_id or dead.dead_letter_id).encode(), dead.to_json())
        self.counts.dead_lettered += 1
        self.counts.dead_letter_reasons[reason_kind(dead.reason)] += 1

    async def _send(self, topic: str, key: bytes, value: bytes) -> None:
        self._in_flight.append(await self._producer.send(topic, value=value, key=key))
        if len(self._in_flight) >= self._window:
            await self.flush()

    async def flush(self) -> None:
        """Wait until every record sent so far is acknowledged by the broker."""
        in_flight, self._in_flight = self._in_flight, []
        if in_flight:
            await asyncio.gather(*in_flight)
