"""The clean stage's logic: raw JSON bytes in; a CleanTweet to forward, the decisions
taken about it, or a dead letter out. Every decision is explicit and returned, so the
agent can count and log it; nothing here raises on bad input.

Order of work, and why:
1. decode and validate (bad input -> dead letter);
2. deduplicate first, so a replayed tweet is dropped before any other work;
3. relevance to the brand (own posts and off-topic tweets are tagged or dropped);
4. normalise text keeping meaning, extract features, language, location;
5. scrub PII into ``text_scrubbed``, the only form sent to providers without zero
   data retention (the original text stays beside it for local use).
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Callable

from stream_app import metrics
from stream_app.clean.dedup import Deduplicator
from stream_app.clean.language import detect_language
from stream_app.clean.location import extract_location
from stream_app.clean.pii import scrub_pii
from stream_app.clean.relevance import CUSTOMER, BrandConfig
from stream_app.topics import decode
from stream_app.records import (DEFAULT_MAX_FUTURE_SKEW_S, CleanDecision, CleanTweet, DeadLetter,
                                PerTimeline, RawTweet, parse_iso, raw_tweet_problem, timeline_of)

STAGE = metrics.STAGE_CLEAN

_URL = re.compile(r"https?://([^/\s]+)\S*", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@(\w{1,30})")
_HASHTAG = re.compile(r"(?<![\w#&])#(\w+)")
_SPACES = re.compile(r"\s+")
_ELONGATED = re.compile(r"(\w)\1{3,}")  # 4+ times the same letter: "nuuuuul"
_EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\u2300-\u23FF]")


def clean_text(text: str) -> str:
    """Normalised text that keeps meaning: NFC, entities decoded, URLs reduced to
    ``<url:domain>``, elongations capped at three letters, whitespace collapsed.
    Mentions, hashtags and emojis stay in place (they carry meaning)."""
    text = unicodedata.normalize("NFC", html.unescape(text)).replace("\x00", "")
    text = _URL.sub(lambda m: f"<url:{m.group(1).lower()}>", text)
    text = _ELONGATED.sub(lambda m: m.group(1) * 3, text)
    return _SPACES.sub(" ", text).strip()


def emoji_names(text: str) -> list[str]:
    """Emojis as text (``😡`` -> ``pouting_face``): sentiment features for any classifier."""
    names = []
    for char in _EMOJI.findall(text):
        name = unicodedata.name(char, "")
        if name:
            names.append(name.lower().replace(" ", "_").replace("-", "_"))
    return names


@dataclass
class CleanResult:
    tweet: CleanTweet | None = None
    decisions: list[CleanDecision] = field(default_factory=list)
    dead_letter: DeadLetter | None = None


CLEAN_STEPS = ("decode", "clean", "language", "dedup", "produce")
MAX_REPLAY_TIMELINES = 8  # replays deduplicated at once, besides live; the oldest is dropped


class Cleaner:
    """One per worker process: holds the brand configuration and the dedup state, one
    :class:`Deduplicator` per timeline (:func:`stream_app.records.timeline_of`): which
    copy of a text is the original depends on that replay's tweets only, never on another
    dump replayed before it into the same installation."""

    def __init__(self, brand: BrandConfig, dedup: Callable[[], Deduplicator],
                 max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S) -> None:
        self.brand = brand
        self._dedups = PerTimeline(lambda timeline: dedup(), MAX_REPLAY_TIMELINES)
        self.max_future_skew_s = max_future_skew_s
        self.timer = metrics.StepTimer(STAGE, CLEAN_STEPS)  # flushed by the agent

    def dedup_for(self, run_id: str) -> Deduplicator:
        return self._dedups.get(timeline_of(run_id))[0]

    def clean(self, payload: bytes) -> CleanResult:
        timer = self.timer
        timer.start()
        try:
            data = decode(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return CleanResult(dead_letter=DeadLetter.build(
                stage=STAGE, reason=f"invalid JSON: {exc.__class__.__name__}", payload=payload))
        problem = raw_tweet_problem(data, self.max_future_skew_s)
        if problem is not None:
            data = data if isinstance(data, dict) else {}
            return CleanResult(dead_letter=DeadLetter.build(
                stage=STAGE, reason=problem, payload=payload, run_id=str(data.get("run_id", "")),
                tweet_id=str(data.get("id", "")), source=str(data.get("source", ""))))
        raw = RawTweet.from_dict(data)
        timer.lap("decode")
        return self._clean_valid(raw)

    def _clean_valid(self, raw: RawTweet) -> CleanResult:
        timer = self.timer
        result = CleanResult()
        text_clean = clean_text(raw.text)
        timer.lap("clean")
        seen = self.dedup_for(raw.run_id).check(raw.id, text_clean, parse_iso(raw.created_at).timestamp(),
                                is_retweet=raw.is_retweet)
        timer.lap("dedup")
        if seen.kind == "exact":
            # A redelivery (the worker restarted or Faust re-read a partition after a seek)
            # or a replay of the same file. Dropping it would lose the tweet whenever the
            # first pass's output never became durable; passing it on is safe, because
            # everything downstream is keyed by tweet id (ClickHouse replaces the row, the
            # signal windows count an id once) and the classify stage reuses its label.
            result.decisions.append(CleanDecision.build(
                raw, "exact_duplicate", "tagged", seen.duplicate_of,
                "same tweet id seen again: passed on, stored once by id"))
        if seen.kind in ("retweet", "near_duplicate"):
            detail = f"similarity {seen.similarity:.2f}" if seen.duplicate_of else "original not seen"
            result.decisions.append(CleanDecision.build(raw, seen.kind, "tagged", seen.duplicate_of, detail))

        relevance = self.brand.relevance(raw.text, raw.author, raw.in_reply_to)
        if relevance != CUSTOMER:
            action = "dropped" if self.brand.policy(relevance) == "drop" else "tagged"
            result.decisions.append(CleanDecision.build(raw, relevance, action, detail=f"brand {self.brand.name}"))
            if action == "dropped":
                return result

        location = extract_location(raw.text, raw.author_location)
        mentions = _MENTION.findall(text_clean)
        scrubbed = scrub_pii(text_clean, public_handles=self.brand.accounts)
        fields = raw.to_dict()
        timer.lap("clean")
        fields["lang"] = detect_language(text_clean, raw.lang)
        timer.lap("language")
        result.tweet = CleanTweet(
            **fields,
            text_clean=text_clean,
            location=location.city if location else "",
            region_code=location.region_code if location else "",
            mentions=mentions,
            hashtags=_HASHTAG.findall(text_clean),
            url_domains=[m.group(1).lower() for m in _URL.finditer(raw.text)],
            emojis=emoji_names(text_clean),
            text_scrubbed=scrubbed.text,
            pii_kinds=list(scrubbed.found),
            duplicate_of=seen.duplicate_of if seen.kind != "original" else "",
            dedup_kind=seen.kind,
            relevance=relevance,
            brand=self.brand.name,
        )
        timer.lap("clean")
        return result
