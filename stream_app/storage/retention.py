"""Retention: a TTL per table, from settings, applied when the sink opens the store.

Kept out of the migrations so that changing ``DALLOSH_*_RETENTION_DAYS`` needs no new
migration, and so that a migration recreating a table does not lose its TTL. A TTL is
altered only when it differs from what the table has: ``MODIFY TTL`` rewrites the TTL
information of existing parts, which is not free on a large table.

Tweets expire by ``stored_at``, not ``created_at``: an analyst replaying a dump from 2018
must not see it deleted by the next merge.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from stream_app.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableTTL:
    table: str
    column: str
    days: int

    @property
    def expression(self) -> str:
        """As ClickHouse prints it back in ``system.tables.engine_full``."""
        return f"toDateTime({self.column}) + toIntervalDay({self.days})"


@dataclass(frozen=True)
class Retention:
    tweets_days: int
    rollup_days: int
    alerts_days: int
    provider_calls_days: int
    dlq_days: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "Retention":
        return cls(tweets_days=settings.tweets_retention_days,
                   rollup_days=settings.rollup_retention_days,
                   alerts_days=settings.alerts_retention_days,
                   provider_calls_days=settings.provider_calls_retention_days,
                   dlq_days=settings.dlq_retention_days)

    def rules(self) -> list[TableTTL]:
        return [TableTTL("tweets", "stored_at", self.tweets_days),
                TableTTL("clean_decisions", "at", self.tweets_days),
                TableTTL("tweets_by_minute", "last_stored", self.rollup_days),
                TableTTL("alerts", "stored_at", self.alerts_days),  # updated_at is event time
                TableTTL("provider_calls", "at", self.provider_calls_days),
                TableTTL("dlq", "at", self.dlq_days)]


def current_ttl(client: Client, database: str, table: str) -> str | None:
    """The table's TTL expression, '' when it has none, None when the table is missing."""
    rows = client.query("SELECT engine_full FROM system.tables WHERE database = {db:String} "
                        "AND name = {t:String}", parameters={"db": database, "t": table}).result_rows
    if not rows:
        return None
    match = re.search(r" TTL (.+?)(?: SETTINGS |$)", rows[0][0])
    return match[1].strip() if match else ""


def apply_retention(client: Client, retention: Retention, database: str = "dallosh") -> list[str]:
    """Make every table's TTL match ``retention``; returns the tables altered now."""
    altered = []
    for rule in retention.rules():
        have = current_ttl(client, database, rule.table)
        if have is None:
            log.warning("retention: table %s.%s does not exist; skipped", database, rule.table)
            continue
        columns = {r[0] for r in client.query(f"DESCRIBE TABLE {database}.{rule.table}").result_rows}
        if rule.column not in columns:
            log.warning("retention: %s.%s has no column %s; its TTL is left as it is",
                        database, rule.table, rule.column)
            continue
        if rule.days == 0:
            if have:
                client.command(f"ALTER TABLE {database}.{rule.table} REMOVE TTL")
                altered.append(rule.table)
        elif have != rule.expression:
            client.command(f"ALTER TABLE {database}.{rule.table} MODIFY TTL {rule.expression}")
            altered.append(rule.table)
    return altered
