"""Language of a tweet: French, English or other.

The source's own ``lang`` (X sets it on every post) wins when it says fr or en;
otherwise lingua-language-detector decides, offline, among the languages a French
operator's mentions actually contain. Short or emoji-only texts it cannot place are
"other".
"""

from __future__ import annotations

import re
from functools import lru_cache

from lingua import Language, LanguageDetector, LanguageDetectorBuilder

CANDIDATES = (Language.FRENCH, Language.ENGLISH, Language.SPANISH, Language.GERMAN,
              Language.ITALIAN, Language.PORTUGUESE, Language.DUTCH, Language.ARABIC)
_CODES = {Language.FRENCH: "fr", Language.ENGLISH: "en"}
# Placeholders and handles are not language: "<url:t.co> @free 😡" has none.
_NOT_WORDS = re.compile(r"<[^>]*>|[@#]\w+|https?://\S+")


@lru_cache(maxsize=1)
def _detector() -> LanguageDetector:
    return LanguageDetectorBuilder.from_languages(*CANDIDATES).with_preloaded_language_models().build()


def detect_language(text: str, declared: str = "") -> str:
    declared = declared.strip().lower()[:2]
    if declared in ("fr", "en"):
        return declared
    words = _NOT_WORDS.sub(" ", text)
    if sum(c.isalpha() for c in words) < 3:
        return "other"
    return _CODES.get(_detector().detect_language_of(words), "other")
