"""Streaming suppression of replays, retweets and near-duplicates (copy-paste campaigns,
bot floods) for the clean stage.

The clean stage calls :meth:`Deduplicator.check` once per tweet, in event-time order
give or take a replay's disorder. Each call says whether the tweet is an original or a
copy of something seen within the horizon, and which tweet is its original, then
remembers the tweet for later calls.

Decisions
---------
``exact``
    The same tweet id is still remembered (seen within the horizon): a redelivery or a
    replay of the file. ``duplicate_of`` is that id, ``similarity`` 1.0 (the horizon keeps
    counting from the first sighting). The clean stage passes it on: downstream is
    idempotent by id, and dropping a redelivery could lose the tweet.
``retweet``
    ``is_retweet`` is true or the text starts with ``RT @handle:`` (prefixes are
    stripped repeatedly: ``RT @a: RT @b: text``). The stripped text is looked up among
    the tweets of the horizon: first by exact normalised text, then as a near-duplicate
    (below). When the original is found, ``duplicate_of`` is the original's id. When it
    is not (the retweeted post was never seen, or has expired), the decision is still
    ``retweet`` but with ``duplicate_of == ""`` and ``similarity == 0.0``: this first
    retweet becomes the *reference* of that text, stored under its own id, so later
    retweets (or copies) of the same text point at it. Callers that count signals should
    count every ``duplicate_of == ""`` as a new signal, whatever the kind.
    A retweet cut by the API (ending with an ellipsis) loses its last, possibly cut,
    word and is matched by containment: at least ``max(threshold, 0.8)`` of its shingles
    must be in the candidate. Candidates are the tweet with the same first 8 words (a
    small prefix index) and the LSH candidates.
``near_duplicate``
    A different id whose normalised text is identical to, or has a shingle-set Jaccard
    similarity of at least ``threshold`` with, a tweet of the horizon. Candidates come
    from MinHash LSH and every candidate is verified with the exact Jaccard similarity of
    the two shingle sets, so the LSH only costs recall, never precision.
``original``
    Anything else; ``duplicate_of == ""`` and ``similarity == 0.0``.

Chains. Every stored tweet carries the id of its family's original (its *root*). A copy
that matches a stored copy points at that copy's root, not at the copy: if B copies A
and C matches B but not A, C is reported as a duplicate of A. ``similarity`` is the
Jaccard similarity with the stored tweet that matched (A itself, or a member of A's
family; 1.0 for an identical normalised text). Copies are indexed too (unless their
normalised text is already known), which is what lets C find B.

First occurrence wins: the first tweet *checked* is the original. With an out-of-order
replay a copy may be checked before its original; it then becomes the reference and the
late original points at it. Decisions are never revised.

Short texts. Texts with fewer than ``MIN_CONTENT_TOKENS`` (5) normalised words ("merci
@free", "@free nul 😡", "toujours rien ?") are never content-deduplicated: different
customers write them independently all day and each one is a signal. They are still
caught as exact replays and as retweets. Consequence: a bot flood of very short texts is
not suppressed.

Normalisation (for dedup only; the clean stage keeps its own text): retweet prefix
removed, HTML entities unescaped, URLs (and the clean stage's ``<url:domain>`` tokens)
and @mentions dropped, lowercased, accents stripped (NFKD), every digit run replaced by
one placeholder ("3 jours" = "4 jours": floods vary numbers), runs of a repeated letter
collapsed to one letter ("nuuuul" = "nuul" = "nul"; lossy, but the same on both sides),
and words are the runs of letters/digits: the ``#`` of hashtags, emojis and punctuation
disappear, a hashtag's word stays.

Shingles: the word bigrams of the normalised text plus its word unigrams except ~100
French/English function words (``STOPWORDS``: "de", "la", "pas", "the"...). Each is a
stable 32-bit hash (blake2b of the word, cached per word; a bigram xors its second
word's hash with its first word's hash premixed by an odd multiplier). Unigrams keep a
one-word edit (a synonym, an added hashtag) from costing too much on a short text;
bigrams keep same-topic tweets in other words apart; function-word unigrams, present in
almost every pair of tweets, only added spurious similarity and LSH candidates.

Measured on ``bench/clean_flood.py``'s default flood (``python -m bench.clean_flood``;
26,220 tweets: 20,020 independent ones, 5,000 campaign copies of 20 seeds, 1,000
retweets, 200 replays; throughput = CPU time of ``check`` on one core of a shared
2-core VM, best of 3):

==========================================  =========  ======  =====  ===========
shingles, LSH bands x rows                  precision  recall  F1     tweets/s
==========================================  =========  ======  =====  ===========
word bigrams + content unigrams, 24x4       0.947      0.978   0.962  25,600
word bigrams + all unigrams, 24x4           0.937      0.985   0.960  23,100
word bigrams (+ unigrams under 4 words)     0.944      0.971   0.957  30,000
character 5-grams, 24x4                     0.944      0.983   0.963   8,600
word bigrams + content unigrams, 14x3       0.947      0.978   0.962  22,000
==========================================  =========  ======  =====  ===========

The first row is the default: the best precision, the second best F1 (character
5-grams are as accurate and three times slower). Every campaign copy whose Jaccard with
its seed is >= 0.6 is flagged (4,889 of 4,889); the 122 missed copies are all copies of
short slogans (6-9 words) where one synonym already brings the Jaccard under 0.6 (such a
copy becomes an original, and its own copies then point at it: 116 of the 338 false
positives). 207 false positives are independent tweets nearly identical to an earlier
one (1 % of the independent tweets; 0.3 % at ``threshold=0.7``, where recall drops to
0.965; at 0.5 precision falls to 0.90). In steady state (constant eviction) the default runs at about
24,700 tweets/s and keeps about 2.1 KB per stored tweet (so up to ~0.4 GB at the
default capacity of 200,000).

Sketch and LSH: classic MinHash with ``BANDS x ROWS`` = 24 x 4 hash functions
``h_i(x) = a_i * x mod 2**32`` (``a_i`` odd; every constant is derived from blake2b of a
fixed string, so identical in every process and on every machine), computed for all of
a tweet's shingles at once with numpy. A band's key is its 4 minima's low 16 bits side
by side (one uint64); a tweet is a candidate when one of its 24 keys is in a stored
tweet's bucket. The probability that a pair becomes a candidate is ``1 - (1 - J**4)**24``:
0.96 at J = 0.6, 0.999 at J = 0.7, 0.18 at J = 0.3, 0.002 at J = 0.1 (measured on random
sets: 0.968 at 0.6, 0.164 at 0.3). 14 x 3 has the same recall at 0.6 but more than twice
as many candidates at J = 0.1-0.3, each one an exact Jaccard check: it is slower.

Memory is bounded three ways: a stored tweet expires when its event time is more than
``horizon_s`` before the newest event time seen, the store never holds more than
``capacity`` tweets, and never more than ``max_bytes`` of per-tweet data (its id, its
normalised text, its 8-word prefix key, its shingle hashes and band keys; the oldest
checked goes first past either bound). A count alone does not bound memory: the raw
schema allows 100,000-character texts, and 200,000 of those would be tens of GB. A tweet
whose data alone exceeds ``max_bytes`` is not stored (its decision is still made
against the store). Eviction removes the tweet from every
structure (id map, text map, prefix index, LSH buckets). Tweets are evicted in arrival
order; a tweet whose event time is older than that of a tweet checked before it can
linger past its horizon until that earlier one goes, but every content lookup checks
the event time, so an expired tweet never matches as an original (its id, while
remembered, still marks a redelivery as ``exact``). A bucket holds at most
``BUCKET_CAP`` tweets (later ones are not added to that bucket but stay reachable through
their other bands), which bounds the cost of one lookup during a flood.

Deterministic: no randomness, and nothing that changes a decision depends on Python's
per-process ``hash()`` (candidates are visited in bucket order, oldest first).
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from collections import deque
from dataclasses import dataclass
from itertools import compress
from operator import xor

import numpy as np

__all__ = ["DedupDecision", "Deduplicator", "normalise", "strip_retweet_prefix",
           "MIN_CONTENT_TOKENS", "PREFIX_WORDS", "STOPWORDS"]

MIN_CONTENT_TOKENS = 5
PREFIX_WORDS = 8        # truncated retweets are also looked up by their first 8 words

_MIX = 0x9E3779B97F4A7C15          # odd 64-bit constant mixing a bigram's first word

_RT_PREFIX = re.compile(r"\s*RT\s?@\w{1,30}\s?:\s*", re.IGNORECASE)
# Dropped spans (URLs, the clean stage's <url:domain> tokens, @mentions) match the
# alternatives without a group; words are the runs of letters/digits (group 1).
_TOKENS = re.compile(r"https?://\S+|www\.\S+|<url:[^>]*>|@\w+|([^\W_]+)")   # on lowercased text
_COMBINING = re.compile("[\u0300-\u036f]+")
_DIGITS = re.compile(r"\d+")
_REPEAT = re.compile(r"([^\W\d_])\1+")
_ELLIPSIS = ("…", "...")
_WORD_CACHE = 1 << 18
# French and English function words (in canonical form: no accents, no doubled letters):
# not unigram shingles (they are in every tweet), still part of the bigrams.
STOPWORDS = frozenset("""
    le la les l un une des de du d a au aux et ou en dans sur pour par avec sans ce cet cete ces
    je j tu il ele on nous vous ils eles me m te t se s y ne n pas plus que qu qui quoi est c ca
    mon ma mes ton ta tes son sa ses notre nos votre vos leur leurs lui eux moi toi ai as avons
    avez ont suis es somes etes sont
    the an and or of to in on at for with by is are was were be ben i you he she it we they my
    your our their me this that these those not no do does did have has had from as but so if
    """.split())


def _stable64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def strip_retweet_prefix(text: str) -> tuple[str, bool]:
    """``("RT @a: RT @b: hello")`` -> ``("hello", True)``."""
    found = False
    while True:
        m = _RT_PREFIX.match(text)
        if m is None:
            return text, found
        text, found = text[m.end():], True


# Lowercased word -> (canonical word, its 32-bit hash, its hash premixed as a bigram's
# first word); whitespace-separated token -> its words' entries. Module-level caches (a
# pure function of the text, identical in every instance), cleared when full.
_words: dict[str, tuple[str, int, int, bool]] = {}
_tokens: dict[str, tuple[tuple[str, int, int, bool], ...]] = {}


def _canon(word: str) -> tuple[str, int, int, bool]:
    canon = _REPEAT.sub(r"\1", _DIGITS.sub("0", _COMBINING.sub("", unicodedata.normalize("NFKD", word))))
    h = _stable64(canon.encode())
    entry = (canon, h & 0xFFFFFFFF, ((h * _MIX) >> 32) & 0xFFFFFFFF, canon not in STOPWORDS)
    if len(_words) >= _WORD_CACHE:
        _words.clear()
    _words[word] = entry
    return entry


def _token(token: str) -> tuple[tuple[str, int, int, bool], ...]:
    get = _words.get
    entries = tuple(get(w) or _canon(w) for w in _TOKENS.findall(token) if w)
    if len(_tokens) >= _WORD_CACHE:
        _tokens.clear()
    _tokens[token] = entries
    return entries


def _words_of(text: str) -> list[tuple[str, int, int, bool]]:
    if "&" in text:
        text = html.unescape(text)
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    get = _tokens.get
    out: list[tuple[str, int, int, bool]] = []
    for token in text.lower().split():
        entries = get(token)
        out += entries if entries is not None else _token(token)
    return out


def normalise(text: str) -> list[str]:
    """The dedup words of a text (see the module docstring)."""
    return [e[0] for e in _words_of(text)]


@dataclass(frozen=True)
class DedupDecision:
    kind: str            # "original" | "exact" | "retweet" | "near_duplicate"
    duplicate_of: str    # id of the original ("" for an original; for "exact" the same id)
    similarity: float    # Jaccard vs the matched stored tweet (1.0 exact, 0.0 original)


ORIGINAL = DedupDecision("original", "", 0.0)
_RETWEET_UNSEEN = DedupDecision("retweet", "", 0.0)


class _Entry:
    """One stored tweet."""
    __slots__ = ("id", "time", "root", "text", "keys", "shingles", "size")

    def __init__(self, tweet_id: str, time: float, root: str, text: str) -> None:
        self.id = tweet_id
        self.time = time
        self.root = root            # id of its family's original (its own id for one)
        self.text = text            # normalised words joined by spaces
        self.keys: bytes | None = None       # LSH band keys (uint64s) when indexed
        self.shingles: bytes | None = None   # its shingle hashes (uint32s) when indexed
        self.size = 0                        # what it counts against max_bytes


class Deduplicator:
    """See the module docstring. Not thread-safe; one instance per clean worker."""

    BANDS = 24
    ROWS = 4
    BUCKET_CAP = 64
    SHINGLES = "word12"           # "word12" | "word12all" | "word2" | "char5" (see the docstring)
    TRUNCATED_CONTAINMENT = 0.8

    def __init__(self, horizon_s: float = 6 * 3600, capacity: int = 200_000,
                 threshold: float = 0.6, max_bytes: int = 256_000_000) -> None:
        if horizon_s <= 0 or capacity < 1 or max_bytes < 1 or not 0.0 < threshold <= 1.0:
            raise ValueError("horizon_s > 0, capacity >= 1, max_bytes >= 1 and "
                             "0 < threshold <= 1 required")
        self.horizon_s = float(horizon_s)
        self.capacity = int(capacity)
        self.max_bytes = int(max_bytes)
        self._bytes = 0
        self.threshold = float(threshold)
        self._newest = float("-inf")
        self._entries: deque[_Entry] = deque()
        self._ids: dict[str, _Entry] = {}
        self._texts: dict[str, _Entry] = {}
        self._prefixes: dict[str, _Entry] = {}
        self._buckets: dict[int, _Entry | list[_Entry]] = {}
        k = self.BANDS * self.ROWS
        consts = [_stable64(f"dallosh-dedup-minhash-{i}".encode()) for i in range(2 * k)]
        # MinHash: h_i(x) = a_i * x mod 2**32 on the low 32 bits of each shingle hash.
        self._a = np.array([(c & 0xFFFFFFFF) | 1 for c in consts[:k]], dtype=np.uint32)
        # Band keys: with 4 rows, the low 16 bits of the 4 minima side by side (one
        # uint64, no arithmetic); otherwise the rows folded by odd multipliers.
        self._fold = np.array([c | 1 for c in consts[k:]], dtype=np.uint64)
        self._work = np.empty((256, k), dtype=np.uint32)
        self._shingle = {"word12": _word_shingles, "word12all": _all_word_shingles,
                         "word2": _bigram_shingles, "char5": _char_shingles}[self.SHINGLES]

    # ----------------------------------------------------------------- public

    def __len__(self) -> int:
        """Tweets stored now (never more than ``capacity``)."""
        return len(self._entries)

    @property
    def stored_bytes(self) -> int:
        """Per-tweet data held now (never more than ``max_bytes``)."""
        return self._bytes

    def index_stats(self) -> dict[str, int]:
        """Sizes of the internal structures (for tests and metrics)."""
        members = sum(len(v) if type(v) is list else 1 for v in self._buckets.values())
        return {"entries": len(self._entries), "ids": len(self._ids), "texts": len(self._texts),
                "prefixes": len(self._prefixes), "buckets": len(self._buckets),
                "bucket_members": members,
                "indexed": sum(e.keys is not None for e in self._entries)}

    def check(self, tweet_id: str, text: str, event_time: float,
              is_retweet: bool = False) -> DedupDecision:
        t = float(event_time)
        if t > self._newest:
            self._newest = t
        cutoff = self._newest - self.horizon_s
        entries = self._entries
        while entries and entries[0].time < cutoff:
            self._evict(entries.popleft())

        if tweet_id in self._ids:      # still remembered: the same tweet, delivered again
            return DedupDecision("exact", tweet_id, 1.0)

        if text.lstrip()[:2].upper() == "RT":
            text, prefixed = strip_retweet_prefix(text)
        else:
            prefixed = False
        retweet = is_retweet or prefixed
        truncated = False
        if retweet:
            stripped = text.rstrip()
            for mark in _ELLIPSIS:
                if stripped.endswith(mark):
                    text, truncated = stripped[:-len(mark)], True
                    break
        words = _words_of(text)
        if truncated and len(words) > 1:
            words.pop()            # the API cut the last word anywhere
        key = " ".join([w[0] for w in words])
        content = len(words) >= MIN_CONTENT_TOKENS

        match: _Entry | None = None
        similarity = 0.0
        if key and (retweet or content):
            hit = self._texts.get(key)
            if hit is not None and hit.time >= cutoff:
                match, similarity = hit, 1.0
        arr = band_keys = None
        if match is None and content:
            shingles = self._shingle(words)
            arr = np.fromiter(shingles, dtype=np.uint32, count=len(shingles))
            band_keys = self._band_keys(arr)
            keys = band_keys.tolist()
            if truncated and len(words) >= PREFIX_WORDS:
                match, similarity = self._prefix_match(key, shingles, cutoff)
            if match is None:
                match, similarity = self._lsh_match(shingles, keys, cutoff, truncated)

        if match is not None:
            root = match.root
            decision = DedupDecision("retweet" if retweet else "near_duplicate", root,
                                     round(similarity, 6))
        else:
            root = tweet_id
            decision = _RETWEET_UNSEEN if retweet else ORIGINAL

        # Store. A tweet whose normalised text is already known adds nothing to the LSH.
        indexed = band_keys is not None and similarity < 1.0
        size = len(tweet_id) + len(key)
        if indexed:
            size += arr.nbytes + band_keys.nbytes
            if len(words) >= PREFIX_WORDS:
                size += len(_prefix(key))
        if size > self.max_bytes:
            return decision
        while entries and (len(entries) >= self.capacity or self._bytes + size > self.max_bytes):
            self._evict(entries.popleft())
        entry = _Entry(tweet_id, t, root, key)
        entry.size = size
        self._bytes += size
        entries.append(entry)
        self._ids[tweet_id] = entry
        if key:
            old = self._texts.get(key)
            if old is None or old.time < cutoff:
                self._texts[key] = entry
        if indexed:
            if len(words) >= PREFIX_WORDS:
                prefix = _prefix(key)
                old = self._prefixes.get(prefix)
                if old is None or old.time < cutoff:
                    self._prefixes[prefix] = entry
            entry.shingles = arr.tobytes()
            entry.keys = band_keys.tobytes()
            buckets = self._buckets
            cap = self.BUCKET_CAP
            setdefault = buckets.setdefault
            for k in keys:
                v = setdefault(k, entry)
                if v is not entry:
                    if type(v) is list:
                        if len(v) < cap:
                            v.append(entry)
                    else:
                        buckets[k] = [v, entry]
        return decision

    # ----------------------------------------------------------------- internals

    def _evict(self, entry: _Entry) -> None:
        self._bytes -= entry.size
        if self._ids.get(entry.id) is entry:
            del self._ids[entry.id]
        if entry.text and self._texts.get(entry.text) is entry:
            del self._texts[entry.text]
        if entry.keys is not None:
            prefix = _prefix(entry.text)
            if self._prefixes.get(prefix) is entry:
                del self._prefixes[prefix]
            buckets = self._buckets
            for k in memoryview(entry.keys).cast("Q"):
                v = buckets.get(k)
                if v is entry:
                    del buckets[k]
                elif type(v) is list:
                    try:
                        v.remove(entry)
                    except ValueError:      # the bucket was full when it was stored
                        continue
                    if len(v) == 1:
                        buckets[k] = v[0]
            entry.keys = entry.shingles = None

    def _prefix_match(self, key: str, shingles: set[int],
                      cutoff: float) -> tuple[_Entry | None, float]:
        cand = self._prefixes.get(_prefix(key))
        if cand is None or cand.time < cutoff:
            return None, 0.0
        n, m = len(shingles), len(cand.shingles) >> 2
        inter = len(shingles.intersection(memoryview(cand.shingles).cast("I")))
        if inter >= max(self.threshold, self.TRUNCATED_CONTAINMENT) * n:
            return cand, inter / (n + m - inter)
        return None, 0.0

    def _lsh_match(self, shingles: set[int], keys: list[int], cutoff: float,
                   truncated: bool) -> tuple[_Entry | None, float]:
        """The first stored tweet (band order, then oldest first) similar enough."""
        threshold = self.threshold
        n = len(shingles)
        lo, hi = threshold * n, n / threshold        # Jaccard >= t needs t*n <= m <= n/t
        need = max(threshold, self.TRUNCATED_CONTAINMENT) * n
        checked: set[int] = set()
        intersection = shingles.intersection
        for v in map(self._buckets.get, keys):
            if v is None:
                continue
            for cand in (v if type(v) is list else (v,)):
                c = id(cand)
                if c in checked:
                    continue
                checked.add(c)
                if cand.time < cutoff:
                    continue
                m = len(cand.shingles) >> 2
                if truncated:      # a cut retweet: most of its shingles are in the original
                    inter = len(intersection(memoryview(cand.shingles).cast("I")))
                    if inter >= need:
                        return cand, inter / (n + m - inter)
                elif lo <= m <= hi:
                    inter = len(intersection(memoryview(cand.shingles).cast("I")))
                    sim = inter / (n + m - inter)
                    if sim >= threshold:
                        return cand, sim
        return None, 0.0

    def _band_keys(self, arr: np.ndarray) -> np.ndarray:
        """The BANDS keys (uint64) of a shingle array (uint32)."""
        n = arr.shape[0]
        if n > self._work.shape[0]:
            self._work = np.empty((n, self._a.shape[0]), dtype=np.uint32)
        work = self._work[:n]
        np.multiply(arr[:, None], self._a, out=work)
        sig = np.minimum.reduce(work, axis=0)
        if self.ROWS == 4:
            return sig.astype(np.uint16).view(np.uint64)
        return (sig.astype(np.uint64) * self._fold).reshape(self.BANDS, self.ROWS).sum(axis=1)


def _prefix(text: str) -> str:
    return " ".join(text.split(" ", PREFIX_WORDS)[:PREFIX_WORDS])


def _word_shingles(words: list[tuple[str, int, int, bool]]) -> set[int]:
    """Word unigrams (function words excepted) and word bigrams (the default)."""
    _, hs, hms, content = zip(*words)
    out = set(compress(hs, content))
    out.update(map(xor, hms, hs[1:]))
    return out


def _all_word_shingles(words: list[tuple[str, int, int, bool]]) -> set[int]:
    """Word unigrams (all of them) and word bigrams."""
    _, hs, hms, _ = zip(*words)
    out = set(hs)
    out.update(map(xor, hms, hs[1:]))
    return out


def _bigram_shingles(words: list[tuple[str, int, int, bool]]) -> set[int]:
    """Word bigrams, plus unigrams for texts of fewer than 4 words."""
    _, hs, hms, _ = zip(*words)
    out = set(map(xor, hms, hs[1:]))
    if len(words) < 4:
        out.update(hs)
    return out


def _char_shingles(words: list[tuple[str, int, int, bool]]) -> set[int]:
    """Character 5-grams of the normalised text."""
    s = " ".join([w[0] for w in words])
    grams = [s[i:i + 5] for i in range(max(1, len(s) - 4))]
    return {_stable64(g.encode()) & 0xFFFFFFFF for g in grams}
