"""Reading a model's answer: JSON (fenced, bare list, truncated...) into validated
:class:`Label` s matched by id; what is missing or invalid is reported for re-sending."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping, Sequence

from stream_app.classify.provider_client import REASON_MAX_CHARS
from stream_app.classify.rules import DEFAULT_TEAMS, TOPICS
from stream_app.classify.types import SENTIMENTS, Label


# --------------------------------------------------------------------------- parsing

_SENTIMENT_WORDS = {"negative": "negative", "neg": "negative", "negatif": "negative",
                    "négatif": "negative", "neutral": "neutral", "neutre": "neutral",
                    "positive": "positive", "pos": "positive", "positif": "positive"}
_PRIORITY_WORDS = {"high": 0, "urgent": 0, "critical": 0, "haute": 0, "medium": 1, "normal": 1,
                   "moderate": 1, "moyenne": 1, "low": 2, "basse": 2}
_THINK = re.compile(r"<think>.*?(</think>|$)", re.S | re.I)
_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)(?:```|$)", re.S)
_ITEMS_ARRAY = re.compile(r'"items"\s*:\s*\[')


def parse_items(content: str, expected_ids: Sequence[str], topics: Sequence[str] = TOPICS,
                teams: Mapping[str, str] = DEFAULT_TEAMS) -> tuple[dict[str, Label], list[str]]:
    """The labels in a model's answer, by id, and the expected ids to send again.
    ``topics`` and ``teams`` are the brand's (``taxonomy.topic_names``, ``.teams``); the
    defaults are the built-in ``free`` brand's.

    Accepted shapes: ``{"items": [...]}`` (or another single list of objects under any
    key), a bare list, a single item object; inside a ```json fence or not, after a
    ``<think>`` block, with prose before or after the JSON.

    Truncated output (the model hit max_tokens): the items array is read object by
    object and every *complete* object before the cut is kept; the cut one is dropped
    and its id reported missing. A complete object is syntactically closed, so none of
    its fields can have been cut.

    Per item: ``id`` must be one of ``expected_ids`` (others are ignored; the first
    occurrence of an id decides, later duplicates are ignored); ``sentiment`` one of
    negative/neutral/positive (also neg/pos and French); ``priority`` 0-2, also from
    "1", "P0", "high"/"medium"/"low", 1.0; an item without a valid sentiment or
    priority is invalid (missing). ``topic`` is matched case-insensitively (spaces and
    hyphens as underscores), unknown or missing -> "other"; ``team`` must be one of the
    teams' values, else the topic's team; ``confidence`` is a number (or "0.8", "80%"),
    clamped to [0, 1], 0.5 when missing; ``reason`` is a string cut to 200 characters.
    """
    expected = list(dict.fromkeys(str(i) for i in expected_ids))
    wanted = set(expected)
    topic_names = {_norm(t): t for t in topics}
    team_names = {t.lower(): t for t in teams.values()}
    labels: dict[str, Label] = {}
    decided: set[str] = set()
    for raw in extract_items(content or ""):
        if not isinstance(raw, dict):
            continue
        item_id = raw.get("id")
        if isinstance(item_id, bool) or not isinstance(item_id, (str, int)):
            continue
        item_id = str(item_id).strip()
        if item_id not in wanted or item_id in decided:
            continue
        decided.add(item_id)
        label = _label(raw, topic_names, team_names, teams)
        if label is not None:
            labels[item_id] = label
    return labels, [i for i in expected if i not in labels]


def extract_items(content: str) -> list[Any]:
    """The list of item objects in ``content`` (see :func:`parse_items`); [] if none."""
    text = _THINK.sub("", content)
    fence = _FENCE.search(text)
    if fence and fence.group(1).strip():
        text = fence.group(1)
    decoder = json.JSONDecoder()
    for match in list(re.finditer(r"[\[{]", text))[:20]:  # prose may hold a stray bracket
        start = match.start()
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            items = _recover_truncated(text, start, decoder)
        else:
            items = _items_of(value)
        if items:
            return items
    return []


def _items_of(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value if any(isinstance(v, dict) for v in value) else []
    if isinstance(value, dict):
        if isinstance(value.get("items"), list):
            return value["items"]
        if "id" in value:
            return [value]
        lists = [v for v in value.values() if isinstance(v, list) and any(isinstance(x, dict) for x in v)]
        if len(lists) == 1:
            return lists[0]
    return []


def _recover_truncated(text: str, start: int, decoder: json.JSONDecoder) -> list[Any]:
    """The complete objects of the items array that begins at or after ``start``, up to
    the first one that does not parse (the cut)."""
    match = _ITEMS_ARRAY.search(text, start)
    if match and (text[start] == "{" or match.start() == start):
        position = match.end()
    elif text[start] == "[":
        position = start + 1
    else:
        return []
    items: list[Any] = []
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text) or text[position] != "{":
            return items
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return items  # the cut object: dropped
        items.append(value)


def _norm(text: str) -> str:
    return re.sub(r"[\s\-]+", "_", text.strip().lower())


def _label(raw: dict, topic_names: Mapping[str, str], team_names: Mapping[str, str],
           teams: Mapping[str, str]) -> Label | None:
    sentiment = raw.get("sentiment")
    sentiment = _SENTIMENT_WORDS.get(sentiment.strip().lower()) if isinstance(sentiment, str) else None
    priority = _priority(raw.get("priority"))
    if sentiment not in SENTIMENTS or priority is None:
        return None
    topic = raw.get("topic")
    topic = topic_names.get(_norm(topic)) if isinstance(topic, str) else None
    if topic is None:
        topic = topic_names.get("other")
        if topic is None:
            return None
    team = raw.get("team")
    team = team_names.get(team.strip().lower()) if isinstance(team, str) else None
    if team is None:
        team = teams.get(topic) or teams.get("other") or DEFAULT_TEAMS.get(topic, DEFAULT_TEAMS["other"])
    reason = raw.get("reason")
    reason = " ".join(str(reason).split())[:REASON_MAX_CHARS] if reason is not None else ""
    return Label(sentiment=sentiment, priority=priority, topic=topic, team=team,
                 confidence=_confidence(raw.get("confidence")), reason=reason)


def _priority(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return value if 0 <= value <= 2 else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _PRIORITY_WORDS:
            return _PRIORITY_WORDS[text]
        if text.startswith("p"):
            text = text[1:]
        if text in ("0", "1", "2"):
            return int(text)
    return None


def _confidence(value: Any) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        return 0.5
    return min(1.0, max(0.0, number))
