"""One classify window: copies reuse, customers go through the cascade, the rest to rules."""

import asyncio

from stream_app.classify.agent import classify_window
from stream_app.classify.cascade import Cascade
from stream_app.classify.provider_client import OpenAICompatibleClient
from stream_app.classify.reuse import RecentClassifications
from stream_app.classify.rules import DEFAULT_TEAMS, TOPICS
from stream_app.records import CleanTweet


def clean_tweet(id_: str, text: str, **extra) -> CleanTweet:
    return CleanTweet(id=id_, text=text, text_clean=text, text_scrubbed=text, run_id="r", source="t",
                      created_at="2026-03-12T10:00:00Z", ingested_at="2026-03-12T10:00:00Z", **extra)


def test_every_tweet_comes_back_once_and_copies_cost_nothing(counter):
    async def main():
        cascade = Cascade([], OpenAICompatibleClient(trust_env=False), counter, TOPICS, DEFAULT_TEAMS)
        recent = RecentClassifications()
        first = [clean_tweet("1", "panne fibre à Lyon, inadmissible"),
                 clean_tweet("2", "il fait beau", relevance="off_topic"),
                 clean_tweet("3", "Bonjour, la panne est résolue", relevance="brand_own")]
        results, calls = await classify_window(first, cascade, recent)
        assert sorted(t.id for t in results) == ["1", "2", "3"]
        assert sum(c.tweets for c in calls) == 3  # one ledger entry per tweet classified
        copies = [clean_tweet("4", "panne fibre à Lyon, inadmissible !!", duplicate_of="1",
                              dedup_kind="near_duplicate"),
                  clean_tweet("5", "RT @a: panne fibre à Lyon", duplicate_of="999", dedup_kind="retweet")]
        results, calls = await classify_window(copies, cascade, recent)
        by_id = {t.id: t for t in results}
        assert by_id["4"].provider == "dedup" and by_id["4"].sentiment == "negative"
        assert by_id["4"].reason.startswith("near_duplicate of 1")
        assert by_id["5"].provider == "rules"  # its original is unknown here: classified
        assert sum(c.tweets for c in calls) == 1
    asyncio.run(main())


def test_a_copy_in_the_same_window_as_its_original_reuses_it_as_one_window_later_would(counter):
    """Window boundaries fall where timing puts them; whether a copy is reused must not
    depend on them, or two replays of one dump end with different tiers."""
    async def main():
        cascade = Cascade([], OpenAICompatibleClient(trust_env=False), counter, TOPICS, DEFAULT_TEAMS)
        original = clean_tweet("1", "panne fibre à Lyon depuis ce matin, inadmissible")
        copy = clean_tweet("2", "panne fibre à Lyon depuis ce matin inadmissible !!", duplicate_of="1",
                           dedup_kind="near_duplicate")
        together, calls = await classify_window([original, copy], cascade, RecentClassifications())
        apart_recent = RecentClassifications()
        apart = (await classify_window([original], cascade, apart_recent))[0] + \
            (await classify_window([copy], cascade, apart_recent))[0]
        facts = lambda results: sorted((t.id, t.sentiment, t.priority, t.topic, t.tier, t.provider)
                                       for t in results)
        assert facts(together) == facts(apart)
        assert {t.id: t.provider for t in together}["2"] == "dedup"
        assert sum(c.tweets for c in calls) == 1
    asyncio.run(main())
