"""Distinct voices: the detectors count people, not tweets (issue #17).

One author's flood, or copies from a handful of accounts, is a voice per account; the
same number of complaints from as many people is an outage. Voices do not depend on the
order tweets arrive in, survive the pruning of a cell's details, and the state never
holds a handle.
"""

import json
import random

from stream_app.records import ClassifiedTweet
from stream_app.signals.detectors import DetectorConfig, burst, slow_rise, threshold
from stream_app.signals.engine import SignalEngine
from stream_app.signals.windows import (VOICE_MEMORY_MINUTES, Aggregate, TweetEvent, WindowStore,
                                        author_key)

T0 = 1_767_571_200.0  # 2026-01-05T00:00:00Z
M0 = int(T0 // 60)


def ev(i, minute, author, negative=True, high=False, location="Lyon", topic="outage", second=0.0):
    return TweetEvent(id=f"t{i}", time=T0 + minute * 60 + second, topic=topic, location=location,
                      negative=negative, high=high, author=author)


def calm_city(store: WindowStore, minutes: int, rng: random.Random) -> int:
    """``minutes`` of calm traffic in Lyon, everyone a different person; the last id."""
    n = 0
    for m in range(minutes):
        for _ in range(rng.randint(1, 3)):
            n += 1
            store.add(ev(n, m, f"calm{n}", negative=rng.random() < 0.3, topic="fibre",
                         second=rng.random() * 59))
    return n


def test_one_author_s_flood_is_one_voice_and_does_not_burst():
    rng = random.Random(1)
    flood, crowd = WindowStore(), WindowStore()
    n = calm_city(flood, 6 * 60, random.Random(1))
    calm_city(crowd, 6 * 60, random.Random(1))
    start = 6 * 60
    for k in range(120):                       # 120 complaints in 20 minutes
        minute, second = start + k // 6, rng.random() * 59
        flood.add(ev(n + 1 + k, minute, "angry-customer", high=True, second=second))
        crowd.add(ev(n + 1 + k, minute, f"person{k}", high=True, second=second))
    step, cfg = M0 + start + 20, DetectorConfig()
    flood_sums = flood.sums("location:Lyon", step - 20, step)
    crowd_sums = crowd.sums("location:Lyon", step - 20, step)
    # Same tweets for the wall; one more voice against 120.
    assert flood_sums.volume == crowd_sums.volume and flood_sums.negative == crowd_sums.negative
    assert crowd_sums.voices - flood_sums.voices == 119
    for key in ("location:Lyon", "topic:outage", "all"):
        assert burst(flood, key, step, cfg) is None
        assert threshold(flood, key, step, cfg) is None
    assert burst(crowd, "location:Lyon", step, cfg) is not None


def test_an_author_complaining_all_day_is_one_voice_until_an_hour_of_silence():
    store = WindowStore()
    for m in range(0, 600, 5):                 # every five minutes for ten hours
        store.add(ev(m, m, "regular"))
    assert store.sums("location:Lyon", M0, M0 + 600).voices == 1
    store.add(ev(10_000, 600 + VOICE_MEMORY_MINUTES + 1, "regular"))   # after an hour's silence
    assert store.sums("location:Lyon", M0, M0 + 700).voices == 2
    # What they said counts apart: a first priority-0 tweet is a new urgent voice.
    store.add(ev(10_001, 601 + VOICE_MEMORY_MINUTES + 1, "regular", high=True))
    total = store.sums("location:Lyon", M0, M0 + 700)
    assert (total.authors, total.voices, total.high_voices) == (2, 2, 1)


def test_voices_do_not_depend_on_arrival_order_and_late_tweets_recompute_them():
    rng = random.Random(7)
    events = [ev(i, rng.randrange(0, 300), f"u{rng.randrange(40)}", negative=rng.random() < 0.5,
                 high=rng.random() < 0.2, second=rng.random() * 59) for i in range(1500)]
    in_order = WindowStore()
    for e in sorted(events, key=lambda e: e.time):
        in_order.add(e)
    shuffled = WindowStore()
    late = events[:]
    rng.shuffle(late)
    for i, e in enumerate(late):
        shuffled.add(e)
        if i % 200 == 0:   # read (and cache) voices midway, as the detectors do
            shuffled.sums("location:Lyon", M0, M0 + 300)
    for start in range(0, 300, 5):
        assert in_order.sums("location:Lyon", M0 + start, M0 + start + 5) == \
            shuffled.sums("location:Lyon", M0 + start, M0 + start + 5)
    # 40 accounts over five hours: far fewer voices than complaints.
    total = in_order.sums("location:Lyon", M0, M0 + 300)
    assert total.negative > 600 and total.voices < 40 * 5


def test_voices_survive_the_pruning_of_details_and_the_state_holds_no_handle():
    rng = random.Random(3)
    engine = SignalEngine(partitions=1)
    events = [(0, ev(i, m, f"u{rng.randrange(300)}", negative=rng.random() < 0.3,
                     location=rng.choice(["Lyon", "Nice"]), second=rng.random() * 59))
              for i, m in enumerate(sorted(rng.randrange(0, 3 * 24 * 60) for _ in range(20_000)))]
    engine.feed(events[:8000])
    day_one = {key: engine.store.sums(key, M0, M0 + 24 * 60) for key in ("all", "location:Lyon")}
    engine.feed(events[8000:])
    engine.finish()
    first_minute = engine.store.minutes["all"][min(engine.store.minutes["all"])]
    assert not first_minute.authors and first_minute.voices is not None   # details dropped
    assert {key: engine.store.sums(key, M0, M0 + 24 * 60) for key in day_one} == day_one

    tweet = ClassifiedTweet(id="9", text="panne", created_at="2026-01-05T10:00:00Z", run_id="r",
                            source="s", ingested_at="2026-01-05T10:00:01Z", author="jean_dupont75",
                            text_clean="panne", sentiment="negative", priority=0, topic="outage",
                            team="t", confidence=0.9, tier="degraded", provider="rules", model="m",
                            reason="", classified_at="2026-01-05T10:00:02Z", version=1)
    event = TweetEvent.from_tweet(tweet)
    assert event.author == author_key("jean_dupont75") != author_key("jean_dupont76")
    store = WindowStore()
    store.add(event)
    state = json.dumps({k: {m: a.to_dict() for m, a in s.items()} for k, s in store.minutes.items()})
    assert "jean_dupont75" not in state and event.author in state
    # Tweets without an author are each a voice of their own.
    assert author_key("", "1") != author_key("", "2")


def test_cells_round_trip_and_older_state_reads_back_with_tweet_counts_as_voices():
    store = WindowStore()
    for i in range(5):
        store.add(ev(i, 0, f"u{i % 2}", negative=i < 3, high=i == 0))
    cell = store.minutes["location:Lyon"][M0]
    restored = WindowStore()
    restored.add_cell("location:Lyon", M0, Aggregate.from_dict(json.loads(json.dumps(cell.to_dict()))))
    assert restored.sums("location:Lyon", M0, M0 + 1) == store.sums("location:Lyon", M0, M0 + 1)
    assert store.sums("location:Lyon", M0, M0 + 1).voices == 2
    legacy = {"volume": 5, "negative": 3, "high": 1, "authors": ["jean", "marie"], "terms": {},
              "examples": [], "ids": []}
    old = Aggregate.from_dict(legacy)
    assert not old.authors and old.voices == (2, 3, 1)


def test_a_city_s_slow_rise_made_of_one_account_is_not_one():
    """A slow rise is people: one account posting more and more all afternoon is not."""
    rng = random.Random(4)
    store, n = WindowStore(), 0
    rise_start = 3 * 24 * 60 + 6 * 60
    for m in range(3 * 24 * 60 + 18 * 60):
        factor = 3 * max(0, m - rise_start) / (12 * 60)     # extra: x0 -> x3 over 12 h
        for _ in range(rng.randint(0, 1)):
            n += 1
            store.add(ev(n, m, f"calm{n}", negative=False, location="Lille"))
        if rng.random() < 0.3:
            n += 1
            store.add(ev(n, m, f"calm{n}", location="Lille"))
        if rng.random() < 0.3 * factor:
            n += 1
            store.add(ev(n, m, "one-account", location="Lille"))
    cfg = DetectorConfig()
    assert not any(slow_rise(store, "location:Lille", M0 + s, cfg)
                   for s in range(rise_start, rise_start + 12 * 60, 5))
