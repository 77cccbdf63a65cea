"""An alert explains itself (issue #17): distinctive terms, representative complaints of
the main cluster (scrubbed text only), people, topic and sentiment mix, one sentence.

The unit tests pin the pieces (the main cluster's centre, the bounded state, no raw
text); the replay test checks the explanation of the demo's Bordeaux alert against
what ClickHouse holds of the same run: its terms come from the incident's tweets, its
representative tweets are complaints of the incident quoted by their scrubbed text,
and its counts (complaints, people, topics, sentiments) are ClickHouse's."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timezone

import pytest

from stream_app.records import ClassifiedTweet
from stream_app.signals.alerts import (TERMS_MIN_COUNT, distinctive_terms, representatives,
                                       top_mix)
from stream_app.signals.windows import (MAX_EXAMPLES, SAMPLE_CHARS,
                                        Aggregate, TweetEvent, WindowStore, author_key,
                                        text_terms)
from stream_app.storage.clickhouse import store_session
from tests.replayed_store import ReplayedStore, replayed_store

BASE = 1_773_300_000 - 1_773_300_000 % 86_400   # a midnight, epoch seconds


def event(i: int, minute: int, text: str, *, negative: bool = True, location: str = "Lyon",
          topic: str = "outage", sentiment: str | None = None) -> TweetEvent:
    return TweetEvent(id=f"t{i}", time=BASE + minute * 60 + i % 50, topic=topic,
                      location=location, negative=negative, high=False,
                      author=author_key(f"u{i}"), terms=text_terms(text),
                      sentiment=sentiment or ("negative" if negative else "neutral"), text=text)


def test_the_representative_is_the_centre_of_the_main_cluster():
    """Three complaints about the fibre (the most shared distinctive term), one about
    the bill: the quote is a fibre complaint, the one closest to the others, and a
    copy or a retweet of the same text is quoted once."""
    samples = [(1.0, "a", "facture trop chère ce mois"),
               (2.0, "b", "panne fibre depuis midi"),
               (3.0, "c", "panne fibre encore, rien ne marche"),
               (4.0, "d", "fibre coupée depuis midi, panne"),
               (5.0, "e", "panne fibre depuis midi"),
               (6.0, "f", "RT <HANDLE>: panne fibre depuis midi !")]
    chosen = representatives(samples, ["fibre", "panne", "facture"])
    assert [i for i, _ in chosen] == ["b", "d", "c"]
    assert "a" not in {i for i, _ in chosen} and len({t for _, t in chosen}) == 3
    # No distinctive term: the whole set is the cluster; nothing to quote, nothing quoted.
    assert representatives(samples[:1], []) == [("a", "facture trop chère ce mois")]
    assert representatives([], ["fibre"]) == []


def test_a_cell_keeps_a_bounded_scrubbed_sample_and_its_mixes():
    """However large the minute, a cell keeps MAX_EXAMPLES texts of SAMPLE_CHARS at most
    (those of its examples), counts its topics and sentiments, and survives the
    changelog round trip; its details go when it is reduced to counts."""
    cell = Aggregate()
    for i in range(500):
        cell.add(event(i, 0, f"panne {i} " + "x" * 400, negative=i % 2 == 0,
                       topic="outage" if i % 5 else "billing"))
    assert len(cell.texts) == MAX_EXAMPLES and set(cell.texts) == {i for _, i in cell.examples}
    assert all(len(t) == SAMPLE_CHARS for t in cell.texts.values())
    assert cell.topics == Counter({"outage": 400, "billing": 100})
    assert cell.sentiments == Counter({"negative": 250, "neutral": 250})
    again = Aggregate.from_dict(cell.to_dict())
    assert (again.texts, again.topics, again.sentiments) == (cell.texts, cell.topics, cell.sentiments)
    assert not cell.counts_only().texts and not cell.counts_only().topics
    # State written before explanations existed still loads.
    old = {k: v for k, v in cell.to_dict().items() if k not in ("texts", "topics", "sentiments")}
    assert Aggregate.from_dict(old).texts == {}


def test_the_signals_stage_quotes_the_scrubbed_text_never_the_raw_one():
    tweet = dict(id="1", text="@free panne, appelez-moi au 06 12 34 56 78",
                 text_clean="@free panne, appelez-moi au 06 12 34 56 78",
                 text_scrubbed="@free panne, appelez-moi au <PHONE>", created_at="2026-03-12T14:00:00Z",
                 run_id="r", source="t", ingested_at="2026-03-12T14:00:00Z", sentiment="negative",
                 priority=1, topic="outage", team="t", confidence=1.0, tier="rules", provider="",
                 model="", reason="", classified_at="2026-03-12T14:00:00Z", version=1)
    assert TweetEvent.from_tweet(ClassifiedTweet(**tweet)).text == "@free panne, appelez-moi au <PHONE>"
    # A tweet without a scrubbed text (an older clean stage) is not quoted at all.
    assert TweetEvent.from_tweet(ClassifiedTweet(**(tweet | {"text_scrubbed": ""}))).text == ""
    assert TweetEvent.from_tweet(ClassifiedTweet(**tweet)).sentiment == "negative"


def test_distinctive_terms_leave_out_the_places_own_name():
    store = WindowStore()
    n = 0
    for minute in range(0, 24 * 60, 6):        # a calm day in Saint-Étienne, then an outage
        n += 1
        store.add(event(n, minute, "facture saint étienne", location="Saint-Étienne"))
    for minute in range(24 * 60, 24 * 60 + 30):
        n += 1
        store.add(event(n, minute, "panne fibre saint étienne", location="Saint-Étienne"))
    terms = distinctive_terms(store, "location:Saint-Étienne", 24 * 60 + BASE // 60,
                              24 * 60 + 30 + BASE // 60)
    assert terms[:2] == ["fibre", "panne"] and "étienne" not in terms and "saint" not in terms


# --------------------------------------------------------------------------- on a replay

@pytest.fixture(scope="module")
def store(tmp_path_factory, kafka_bootstrap) -> ReplayedStore:
    return replayed_store(tmp_path_factory.getbasetemp() / "replayed-demo", kafka_bootstrap)


def minute_of(t: datetime) -> int:
    return int(t.replace(tzinfo=timezone.utc).timestamp()) // 60


@pytest.mark.integration
def test_the_bordeaux_alert_explains_itself_with_clickhouses_figures(store):
    run_id = store.demo.replay.run_id
    with store_session(store.settings.clickhouse_dsn) as client:
        result = client.query(
            "SELECT * FROM dallosh.alerts FINAL WHERE run_id = {run:String} "
            "AND key = 'location:Bordeaux' AND status != 'withdrawn' ORDER BY first_seen LIMIT 1",
            parameters={"run": run_id})
        assert result.result_rows, "the demo raised no Bordeaux alert"
        alert = dict(zip(result.column_names, result.result_rows[0]))
        tweets = client.query(
            "SELECT id, created_at, author, text, text_clean, text_scrubbed, sentiment, topic "
            "FROM dallosh.tweets FINAL WHERE run_id = {run:String} AND location = 'Bordeaux'",
            parameters={"run": run_id}).result_rows

    # The span explain() read: to the last window (or, resolved, to the last signal),
    # from the first window; ten minutes at least.
    step = minute_of(alert["resolved_at"] or alert["window_end"])
    span = max(step - minute_of(alert["first_seen"]), 10)
    span -= span % 5
    start = step - span
    incident = [t for t in tweets if start <= minute_of(t[1]) < step]
    complaints = [t for t in incident if t[6] == "negative"]

    summary = re.match(r"Bordeaux: (\d+) complaints from (\d+) people in (\d+) min, ", alert["summary"])
    assert summary, alert["summary"]
    assert int(summary[1]) == len(complaints) > 0
    assert int(summary[3]) == span
    # Against what was usual before it began, not a baseline that trailed over the
    # incident itself (the demo's day has no day before: a trailing baseline).
    assert float(re.search(r", x([\d.]+) usual", alert["summary"])[1]) >= 5
    assert int(summary[2]) == alert["authors"]
    # People: the distinct authors of the incident's complaints (keyed as the windows key
    # them; one account's fifty complaints are one person).
    assert alert["authors"] == len({author_key(t[2], t[0]) for t in complaints}) > 1

    # Mixes: ClickHouse's counts of the incident's tweets.
    assert dict(alert["topic_mix"]) == top_mix(Counter(t[7] or "other" for t in incident))
    assert dict(alert["sentiment_mix"]) == top_mix(Counter(t[6] for t in incident))

    # Terms: each said by the incident's tweets (as the windows tokenise them), and not
    # the place's own name.
    assert alert["terms"]
    for term in alert["terms"]:
        saying = sum(term in text_terms(t[4] or t[3]) for t in incident)
        assert saying >= TERMS_MIN_COUNT, term
    assert "bordeaux" not in alert["terms"]
    for term in alert["terms"][:3]:
        assert f"'{term}'" in alert["summary"]

    # Representative tweets: complaints of the incident, quoted by their scrubbed text.
    by_id = {t[0]: t for t in complaints}
    assert alert["representative_ids"] and \
        len(alert["representative_ids"]) == len(alert["representative_texts"])
    for tweet_id, text in zip(alert["representative_ids"], alert["representative_texts"]):
        assert tweet_id in by_id, tweet_id
        assert text == " ".join(by_id[tweet_id][5].split())[:SAMPLE_CHARS]
    # The main cluster: the first quote says the alert's most shared distinctive term.
    assert set(text_terms(alert["representative_texts"][0])) & set(alert["terms"])
    assert alert["representative_texts"][0] in alert["message"]
