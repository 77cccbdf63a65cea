"""The clean stage's pure logic: raw JSON bytes in, a CleanTweet or a dead letter out.

This first version normalises text (keeping meaning: entities unescaped, URLs reduced to
a token with their domain, whitespace collapsed), settles the language and finds the
location. The original text always travels beside the cleaned one.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from dataclasses import dataclass

from stream_app.clean.location import extract_location
from stream_app.records import CleanTweet, DeadLetter, RawTweet, raw_tweet_problem

STAGE = "clean"

_URL = re.compile(r"https?://([^/\s]+)\S*", re.IGNORECASE)
_SPACES = re.compile(r"\s+")

# Short function words that tell French from English in a tweet; the source's own
# `lang` field wins when it is fr or en.
_FR_WORDS = frozenset("""le la les des une est et pas plus que qui pour dans sur avec mais
    je tu il nous vous ils mon ma mes votre vos depuis encore toujours rien merci bonjour
    ça ce cette très chez aucun quand à de du au aux ne""".split())
_EN_WORDS = frozenset("""the is are and not with for but my your you we they this that have
    has been still since no any thanks please from what when why how can can't don't""".split())
_WORD = re.compile(r"[a-zàâçéèêëîïôûùüÿœ']+")


def clean_text(text: str) -> str:
    text = unicodedata.normalize("NFC", html.unescape(text)).replace("\x00", "")
    text = _URL.sub(lambda m: f"<url:{m.group(1).lower()}>", text)
    return _SPACES.sub(" ", text).strip()


def detect_language(text: str, declared: str = "") -> str:
    declared = declared.strip().lower()[:2]
    if declared in ("fr", "en"):
        return declared
    words = _WORD.findall(text.lower())
    fr = sum(w in _FR_WORDS for w in words)
    en = sum(w in _EN_WORDS for w in words)
    if fr == en == 0:
        return "other"
    return "fr" if fr >= en else "en"


@dataclass(frozen=True)
class CleanResult:
    tweet: CleanTweet | None = None
    dead_letter: DeadLetter | None = None


def clean_record(payload: bytes) -> CleanResult:
    """Decode and clean one message of ``tweets.raw``; never raises on bad input."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return CleanResult(dead_letter=DeadLetter.build(
            stage=STAGE, reason=f"invalid JSON: {exc.__class__.__name__}", payload=payload))
    problem = raw_tweet_problem(data)
    if problem is not None:
        data = data if isinstance(data, dict) else {}
        return CleanResult(dead_letter=DeadLetter.build(
            stage=STAGE, reason=problem, payload=payload, run_id=str(data.get("run_id", "")),
            tweet_id=str(data.get("id", "")), source=str(data.get("source", ""))))
    raw = RawTweet.from_dict(data)
    location = extract_location(raw.text, raw.author_location)
    text_clean = clean_text(raw.text)
    return CleanResult(tweet=CleanTweet(
        **raw.to_dict() | {"lang": detect_language(text_clean, raw.lang)},
        text_clean=text_clean,
        location=location.city if location else "",
        region_code=location.region_code if location else "",
    ))
