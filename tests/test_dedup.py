"""The clean stage's duplicate detector (stream_app.clean.dedup) and its benchmark flood."""

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.clean_flood import FloodTweet, generate_flood, run_detector, score
from stream_app.clean.dedup import MIN_CONTENT_TOKENS, STOPWORDS, DedupDecision, Deduplicator, normalise

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_773_302_400.0
SEED = ("@free Ça fait 5 jours que tout le quartier de la Guillotière à Lyon est sans fibre, "
        "300 foyers privés d'internet et personne ne nous répond. Rétablissez la connexion "
        "maintenant !")


def first_then(text_a: str, text_b: str, dt: float = 60.0, **kwargs) -> DedupDecision:
    d = Deduplicator(**kwargs)
    assert d.check("a", text_a, T0).kind == "original"
    return d.check("b", text_b, T0 + dt)


# ------------------------------------------------------------------ exact replays

def test_a_replayed_id_is_exact_and_not_stored_twice():
    d = Deduplicator()
    assert d.check("1", SEED, T0) == DedupDecision("original", "", 0.0)
    assert d.check("1", SEED, T0) == DedupDecision("exact", "1", 1.0)
    assert d.check("1", "whatever the text", T0 + 5) == DedupDecision("exact", "1", 1.0)
    assert len(d) == 1


# ------------------------------------------------------------------ retweets

def test_a_retweet_points_at_the_original_it_copies():
    d = Deduplicator()
    d.check("orig", SEED, T0)
    d.check("other", "@free toujours pas de réseau 4G à Lille depuis hier soir, ça devient pénible", T0 + 1)
    assert d.check("rt1", f"RT @julie75: {SEED}", T0 + 30) == DedupDecision("retweet", "orig", 1.0)
    # flagged by the API without the prefix, and a retweet of a retweet
    assert d.check("rt2", SEED, T0 + 40, is_retweet=True) == DedupDecision("retweet", "orig", 1.0)
    assert d.check("rt3", f"RT @max: RT @julie75: {SEED}", T0 + 50).duplicate_of == "orig"


def test_a_retweet_cut_by_the_api_still_finds_its_original():
    cut = f"RT @julie75: {SEED}"[:139] + "…"
    decision = first_then(SEED, cut)
    assert (decision.kind, decision.duplicate_of) == ("retweet", "a")
    assert 0.0 < decision.similarity < 1.0       # the Jaccard of the cut text, not 1.0


def test_the_first_retweet_of_an_unseen_post_becomes_the_reference():
    post = ("Incident en cours sur le réseau fibre dans la région lyonnaise : nos équipes sont "
            "mobilisées, rétablissement estimé en fin de journée.")
    d = Deduplicator()
    assert d.check("rt1", f"RT @free: {post}", T0) == DedupDecision("retweet", "", 0.0)
    assert d.check("rt2", f"RT @free: {post}", T0 + 10) == DedupDecision("retweet", "rt1", 1.0)
    # a copy that is not a retweet points at the reference as well
    copy = d.check("c1", f"{post} #panne", T0 + 20)
    assert (copy.kind, copy.duplicate_of) == ("near_duplicate", "rt1")


def test_short_texts_are_not_content_duplicates_but_their_retweets_are():
    d = Deduplicator()
    assert d.check("1", "@free merci !", T0).kind == "original"
    assert d.check("2", "merci @Freebox", T0 + 1).kind == "original"     # another customer
    assert len(normalise("@free toujours rien...")) < MIN_CONTENT_TOKENS
    assert d.check("3", "RT @bob: @free merci !", T0 + 2) == DedupDecision("retweet", "1", 1.0)


# ------------------------------------------------------------------ near-duplicates

COPIES = {
    "another mention": SEED.replace("@free", "@UFCQueChoisir"),
    "emoji added": SEED + " 😡😡",
    "hashtag added": SEED + " #FreeDown",
    "url appended": SEED + " https://t.co/Ab12Cd34Ef",
    "url as the clean stage writes it": SEED + " <url:t.co>",
    "synonym": SEED.replace("fibre", "connexion"),
    "two words changed": SEED.replace("personne", "aucun conseiller").replace("maintenant", "vite"),
    "punctuation and case": SEED.upper().replace(",", "").replace("!", "!!!"),
    "number changed": SEED.replace("5 jours", "6 jours").replace("300", "450"),
    "elongation": SEED.replace("maintenant", "maintenaaaaant"),
    "accents dropped": "@free Ca fait 5 jours que tout le quartier de la Guillotiere a Lyon est sans fibre, "
                       "300 foyers prives d'internet et personne ne nous repond. Retablissez la connexion "
                       "maintenant !",
    "everything at once": SEED.replace("@free", "@Freebox").replace("fibre", "connexion").lower()
                          + " 🤬 #FreeDown https://t.co/zz",
}


@pytest.mark.parametrize("edit", list(COPIES))
def test_copy_paste_variants_are_near_duplicates_of_the_first(edit):
    decision = first_then(SEED, COPIES[edit])
    assert (decision.kind, decision.duplicate_of) == ("near_duplicate", "a")
    assert decision.similarity >= 0.6


def _shingles(text: str) -> set:
    words = normalise(text)
    return {w for w in words if w not in STOPWORDS} | set(zip(words, words[1:]))


def test_a_near_duplicate_reports_the_exact_jaccard_of_its_word_shingles():
    for edit in ("synonym", "two words changed", "hashtag added"):
        a, b = _shingles(SEED), _shingles(COPIES[edit])
        decision = first_then(SEED, COPIES[edit])
        assert decision.similarity == pytest.approx(len(a & b) / len(a | b), abs=1e-6)
        assert decision.similarity < 1.0
    assert normalise("Rétablissez la CONNEXION maintenaaant!! 3 jours #FreeDown @free https://t.co/x 😡") \
        == ["retablisez", "la", "conexion", "maintenant", "0", "jours", "fredown"]


HARD_NEGATIVES = [
    ("@free plus d'internet à Lyon depuis ce matin", "@free panne internet Lyon ce matin ?"),
    ("@free toujours pas de connexion à Bordeaux depuis 14h, je suis en télétravail c'est inadmissible",
     "@Freebox panne de fibre sur Bordeaux depuis cet aprem, impossible de bosser, vous abusez"),
    ("@FreeMobile ma facture a augmenté de 5 euros sans prévenir, qui peut m'expliquer ?",
     "@free pourquoi ma facture augmente encore ce mois-ci ? personne ne m'a prévenu"),
    ("@free 45 minutes d'attente au 3244 et toujours personne, le service client est injoignable",
     "@free le service client raccroche au bout de 20 minutes, impossible de joindre un humain"),
    ("my internet has been down since this morning in Lyon, any update on the outage?",
     "is there an outage in Lyon? no internet at home since this morning"),
]


@pytest.mark.parametrize("a, b", HARD_NEGATIVES)
def test_independent_complaints_about_the_same_thing_are_not_duplicates(a, b):
    assert first_then(a, b) == DedupDecision("original", "", 0.0)


def test_a_chain_of_copies_points_at_the_first_tweet():
    a = ("@free trois semaines sans fibre dans tout le quartier de la gare à Nantes et aucun "
         "technicien ne vient réparer la panne")
    b = a.replace("ne vient réparer la panne", "ne se déplace")     # Jaccard with a: 0.71
    c = b.replace("trois semaines", "deux mois")                    # 0.75 with b, 0.54 with a
    d = Deduplicator()
    d.check("A", a, T0)
    assert d.check("B", b, T0 + 1).duplicate_of == "A"
    decision = d.check("C", c, T0 + 2)      # close to B, not to A
    assert (decision.kind, decision.duplicate_of) == ("near_duplicate", "A")
    assert decision.similarity == pytest.approx(0.75)   # measured against B, which matched


# ------------------------------------------------------------------ bounded memory

def test_a_copy_after_the_horizon_is_an_original_again():
    d = Deduplicator(horizon_s=3600)
    d.check("a", SEED, T0)
    assert d.check("b", COPIES["hashtag added"], T0 + 3599).duplicate_of == "a"
    assert len(d) == 2
    # one hour after b: a has expired (b has not, so c points at b's original... which is a,
    # still named as the family's original even though a itself has been forgotten)
    assert d.check("c", COPIES["synonym"], T0 + 3601 + 3598).duplicate_of == "a"
    later = T0 + 10 * 3600
    assert d.check("d", SEED, later) == DedupDecision("original", "", 0.0)
    assert d.check("a", SEED, later + 1).kind == "near_duplicate"   # an old id is no replay now
    assert len(d) == 2


def test_an_expired_entry_never_matches_even_when_it_arrived_late():
    d = Deduplicator(horizon_s=3600)
    d.check("new", "@free un tweet récent sans aucun rapport avec la suite du test", T0 + 7200)
    d.check("late", SEED, T0)         # arrives after, but is already older than the horizon
    assert d.check("copy", COPIES["emoji added"], T0 + 7201).kind == "original"
    # a redelivery of the straggler itself is still recognised while its id is remembered
    assert d.check("late", SEED, T0) == DedupDecision("exact", "late", 1.0)


def test_capacity_bounds_every_structure_and_eviction_empties_the_buckets():
    tweets = [t for t in generate_flood(n_normal=600, n_campaigns=1, copies_per_campaign=60,
                                        n_retweets=40, n_replayed=10, seed=5)]
    d = Deduplicator(capacity=50)
    per_tweet_keys = Deduplicator.BANDS
    for t in tweets:
        d.check(t.id, t.text, t.event_time, t.is_retweet)
        stats = d.index_stats()
        assert len(d) <= 50
        assert stats["ids"] <= 50 and stats["texts"] <= 50 and stats["prefixes"] <= 50
        assert stats["bucket_members"] <= stats["indexed"] * per_tweet_keys
    assert len(d) == 50
    # Once everything is past the horizon, a single tweet remains, and so do its keys only.
    d.check("last", SEED, tweets[-1].event_time + 10 * d.horizon_s)
    stats = d.index_stats()
    assert (stats["entries"], stats["ids"], stats["texts"], stats["indexed"]) == (1, 1, 1, 1)
    assert stats["buckets"] == stats["bucket_members"] <= per_tweet_keys
    assert stats["prefixes"] == 1


def _letters(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 20)
        out += "bcdfghjklmnpqrstvwxz"[r] + "aeiou"[r % 5]   # no doubled letters, no digits
        if not n:
            return out


def _long_tweet(i: int, words: int) -> str:
    # Distinct words (dedup maps digits to one placeholder), so no two tweets share a
    # shingle and every one is an indexed original.
    return " ".join(_letters(i * 1_000_003 + j) for j in range(words))


def test_a_byte_budget_bounds_memory_when_texts_are_long():
    """A count bound alone lets 200,000 tweets of 100,000 characters each through (tens of
    GB): the byte budget evicts the oldest past it, whatever the count."""
    budget = 1_000_000
    d = Deduplicator(capacity=200_000, max_bytes=budget)
    for i in range(30):   # ~110 KB of per-tweet data each: ~9 fit
        d.check(f"long{i}", _long_tweet(i, 5_000), T0 + i)
        assert d.stored_bytes <= budget
    assert 5 <= len(d) < 30, len(d)
    # The oldest went first; the newest are still found (as exact replays).
    assert d.check("long0", _long_tweet(0, 5_000), T0 + 31).kind == "original"
    assert d.check("long29", _long_tweet(29, 5_000), T0 + 31).kind == "exact"
    # Eviction gives the bytes back: short tweets refill the store up to the count bound.
    small = Deduplicator(capacity=30, max_bytes=budget)
    for i in range(20):
        small.check(f"s{i}", _long_tweet(i, 5_000), T0)
    for i in range(100):
        small.check(f"t{i}", f"message court numero {i} sur la panne", T0)
    assert len(small) == 30 and small.stored_bytes < 30 * 200


def test_a_tweet_larger_than_the_whole_budget_is_decided_but_not_stored():
    d = Deduplicator(max_bytes=50_000)
    d.check("small", SEED, T0)
    huge = _long_tweet(1, 10_000)
    assert d.check("huge", huge, T0 + 1).kind == "original"
    assert d.stored_bytes <= 50_000 and len(d) == 1
    assert d.check("small-copy", SEED, T0 + 2).duplicate_of == "small"


# ------------------------------------------------------------------ determinism

def _digest(decisions) -> str:
    return hashlib.sha256(json.dumps([[d.kind, d.duplicate_of, d.similarity] for d in decisions])
                          .encode()).hexdigest()


SMALL = dict(n_normal=1500, n_campaigns=2, copies_per_campaign=60, n_retweets=80, n_replayed=20, seed=3)


def test_decisions_are_identical_across_instances_and_processes():
    tweets = generate_flood(**SMALL)
    assert tweets == generate_flood(**SMALL)
    first = _digest(run_detector(tweets, Deduplicator())[0])
    assert first == _digest(run_detector(tweets, Deduplicator())[0])
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from tests.test_dedup import SMALL, _digest\n"
            "from bench.clean_flood import generate_flood, run_detector\n"
            "from stream_app.clean.dedup import Deduplicator\n"
            "print(_digest(run_detector(generate_flood(**SMALL), Deduplicator())[0]))" % str(ROOT))
    for hashseed in ("1", "12345"):      # str hashes differ between these processes
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": hashseed}, cwd=ROOT)
        assert out.stdout.strip() == first


# ------------------------------------------------------------------ the flood and its scoring

def test_the_flood_is_labelled_consistently():
    tweets = generate_flood(n_normal=2000, n_campaigns=3, copies_per_campaign=50, n_retweets=100,
                            n_replayed=20, seed=7)
    kinds = Counter(t.truth_kind for t in tweets)
    assert kinds["exact"] == 20 and kinds["retweet"] == 100
    assert kinds["near_duplicate"] + kinds["original"] == 2000 + 3 + 150
    assert kinds["near_duplicate"] == 150
    position: dict[str, int] = {}
    for i, t in enumerate(tweets):
        if t.truth_kind == "exact":
            assert t.truth_original == t.id and t.id in position          # a replay of an earlier tweet
            continue
        assert t.id not in position                                       # otherwise ids are unique
        position[t.id] = i
        if t.truth_original:
            assert position[t.truth_original] < i                          # originals come first
            assert tweets[position[t.truth_original]].truth_original == ""  # and are family roots
        assert t.is_retweet == (t.truth_kind == "retweet") == t.text.startswith("RT @")
    assert max(t.event_time for t in tweets) - min(t.event_time for t in tweets) <= 4 * 3600 + 60
    assert tweets != generate_flood(n_normal=2000, n_campaigns=3, copies_per_campaign=50,
                                    n_retweets=100, n_replayed=20, seed=8)


def test_score_counts_right_and_wrong_pointers():
    tweets = [FloodTweet("1", "x", T0, False, "", "original"),
              FloodTweet("2", "x", T0, False, "1", "near_duplicate"),
              FloodTweet("3", "RT", T0, True, "1", "retweet"),
              FloodTweet("1", "x", T0, False, "1", "exact"),
              FloodTweet("4", "y", T0, False, "", "original")]
    perfect = [DedupDecision("original", "", 0.0), DedupDecision("near_duplicate", "1", 0.9),
               DedupDecision("retweet", "1", 1.0), DedupDecision("exact", "1", 1.0),
               DedupDecision("original", "", 0.0)]
    s = score(tweets, perfect)
    assert (s["dedup_precision"], s["dedup_recall"], s["f1"]) == (1.0, 1.0, 1.0)
    wrong = list(perfect)
    wrong[2] = DedupDecision("retweet", "4", 1.0)          # points at the wrong original
    wrong[4] = DedupDecision("near_duplicate", "2", 0.7)   # an original called a copy
    s = score(tweets, wrong)
    assert (s["true_positives"], s["false_positives"], s["false_negatives"]) == (2, 2, 1)
    assert s["dedup_precision"] == 0.5 and s["dedup_recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["per_kind"]["retweet"] == {"n": 1, "duplicates": 1, "false_positive": 1, "missed": 1}


def test_a_small_flood_is_deduplicated_with_high_precision_and_recall():
    tweets = generate_flood(n_normal=3000, n_campaigns=3, copies_per_campaign=100, n_retweets=150,
                            n_replayed=30, seed=11)
    decisions, _ = run_detector(tweets, Deduplicator())
    s = score(tweets, decisions)
    assert s["duplicates"] == sum(1 for t in tweets if t.truth_original) > 400
    assert s["dedup_precision"] >= 0.95, s
    assert s["dedup_recall"] >= 0.95, s
    assert s["per_kind"]["exact"].get("found") == 30


# ------------------------------------------------------------------ the classify stage's reuse cache

def test_the_reuse_cache_is_bounded_in_characters_and_keeps_no_tweet_text():
    """Copies reuse their original's label (stream_app.classify.reuse): 100,000 originals
    of 100,000 characters must not mean 10 G characters held."""
    from stream_app.classify.reuse import RecentClassifications
    from stream_app.records import ClassifiedTweet, CleanTweet

    def classified(i: int, text: str, reason: str = "r") -> ClassifiedTweet:
        return ClassifiedTweet(
            id=str(i), text=text, text_clean=text, text_scrubbed=text, created_at="2026-03-12T10:00:00Z",
            run_id="r", source="t", ingested_at="2026-03-12T10:00:00Z", sentiment="negative",
            priority=0, topic="outage", team="network_ops", confidence=0.9, tier="cloud",
            provider="p", model="m", reason=reason, classified_at="2026-03-12T10:00:01Z", version=1)

    recent = RecentClassifications(capacity=1000, max_chars=20_000)
    for i in range(500):
        recent.remember(classified(i, "panne " * 20_000))   # 120,000 characters each
    assert recent.chars <= 5_000 * 4, "the tweets' texts are held"
    long_reasons = RecentClassifications(capacity=1000, max_chars=20_000)
    for i in range(500):
        long_reasons.remember(classified(i, "panne", reason="x" * 400))
        assert long_reasons.chars <= 20_000
    assert 20 <= len(long_reasons) < 500
    copy = CleanTweet(id="c", text="panne", text_clean="panne", created_at="2026-03-12T10:00:00Z",
                      run_id="r", source="t", ingested_at="2026-03-12T10:00:00Z",
                      duplicate_of="499", dedup_kind="near_duplicate")
    reused = long_reasons.reuse_for(copy, "2026-03-12T10:00:02Z", 2)
    assert reused is not None and reused.provider == "dedup" and reused.topic == "outage"
    assert long_reasons.reuse_for(copy.__class__(**(copy.to_dict() | {"duplicate_of": "0"})),
                                  "2026-03-12T10:00:02Z", 2) is None  # the oldest went first
