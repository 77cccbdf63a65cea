"""Training rows beyond the brand's examples: the LLM tiers' answers kept in the store
(distillation) and analysts' corrections.

``dallosh train --from-store``: every tweet that a cloud or on-prem provider
classified (``dallosh.tweets`` rows whose ``tier`` is one of
:data:`~stream_app.classify.provider_config.PROVIDER_TIERS`, cache hits of their
answers included) becomes a training row for the sentiment, topic and priority heads,
so the local fallback gets closer to the LLM the longer the product runs.

``dallosh train --corrections CSV``: ``text`` and any of ``sentiment``, ``priority``,
``topic``; an empty cell leaves that label out. Corrections weigh more than examples
(:data:`~stream_app.local_model.fewshot.CORRECTION_WEIGHT`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from stream_app.classify.provider_config import PROVIDER_TIERS
from stream_app.local_model.encoders import LocalModelError
from stream_app.local_model.evaluate import normalise_label
from stream_app.local_model.fewshot import CORRECTION, STORE, LabelledSet

LABELS = ("sentiment", "priority", "topic")
STORE_LIMIT = 50_000  # most recent rows read; more adds encoding time, not knowledge


def _clean(head: str, value: object) -> str | None:
    text = str(value if value is not None else "").strip()
    if not text:
        return None
    if head == "sentiment":
        return normalise_label(text)
    if head == "priority":
        return text if text in ("0", "1", "2") else None
    return text.lower()


def _sets() -> dict[str, LabelledSet]:
    return {head: LabelledSet() for head in LABELS}


def read_store_rows(dsn: str, limit: int = STORE_LIMIT) -> dict[str, LabelledSet]:
    """The provider-classified tweets of the store, newest first (one row per tweet)."""
    from stream_app.storage.clickhouse import StorageError, store_session
    tiers = ", ".join(f"'{t}'" for t in PROVIDER_TIERS)
    query = (f"SELECT text_clean, sentiment, toString(priority), topic FROM dallosh.tweets FINAL "
             f"WHERE tier IN ({tiers}) AND text_clean != '' ORDER BY classified_at DESC LIMIT {int(limit)}")
    try:
        with store_session(dsn) as client:
            result = client.query(query).result_rows
    except StorageError as exc:
        raise LocalModelError(f"--from-store: {exc}") from None
    sets = _sets()
    for text, *labels in result:
        for head, value in zip(LABELS, labels):
            label = _clean(head, value)
            if label is not None:
                sets[head].add(text, label, STORE)
    return sets


def read_corrections(paths: Sequence[Path]) -> dict[str, LabelledSet]:
    sets = _sets()
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise LocalModelError(f"--corrections {path}: cannot read ({exc})") from None
        reader = csv.DictReader(text.splitlines())
        columns = set(reader.fieldnames or ())
        present = [head for head in LABELS if head in columns]
        if "text" not in columns or not present:
            raise LocalModelError(f"--corrections {path}: needs a 'text' column and at least one of "
                                  f"{', '.join(LABELS)} (found {sorted(columns)})")
        for line, record in enumerate(reader, start=2):
            tweet = (record.get("text") or "").strip()
            if not tweet:
                continue
            for head in present:
                raw = (record.get(head) or "").strip()
                label = _clean(head, raw)
                if raw and label is None:
                    raise LocalModelError(f"--corrections {path}, line {line}: {head} {raw!r} is not "
                                          "a label (sentiment negative/neutral/positive, priority 0-2)")
                if label is not None:
                    sets[head].add(tweet, label, CORRECTION)
    return sets


def combine(*parts: dict[str, LabelledSet]) -> dict[str, LabelledSet]:
    """Corrections first: a text both corrected and in the store keeps the correction."""
    out = _sets()
    for part in parts:
        for head, rows in part.items():
            for text, label, kind in zip(rows.texts, rows.labels, rows.kinds):
                out[head].add(text, label, kind)
    return out


def describe(sets: dict[str, LabelledSet]) -> str:
    return ", ".join(f"{head} {len(rows.texts):,}" for head, rows in sets.items())
