"""What leaves the system, and who can reach what: personal data never reaches a provider
that keeps data nor an alert page/e-mail; a dashboard variable cannot inject SQL; the
metrics endpoint is not on the network unless asked.

Real components: local OpenAI-compatible HTTP servers on 127.0.0.1 play the providers
(tests/live_server.py), the sink's own insert path fills a real chdb store, the alert
rule's and the budget panel's SQL run on it as Grafana would send them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from stream_app.classify.agent import classify_window
from stream_app.classify.cascade import Cascade
from stream_app.classify.provider_client import OpenAICompatibleClient
from stream_app.classify.provider_config import ProviderConfig
from stream_app.classify.resilience import CircuitBreaker
from stream_app.classify.reuse import RecentClassifications
from stream_app.classify.rules import DEFAULT_TEAMS, TOPICS
from stream_app.clean.pii import scrub_pii
from stream_app.dashboards import queries
from stream_app.dashboards.macros import expand
from stream_app.records import Alert, ClassifiedTweet, CleanTweet, ProviderCall
from stream_app.sink.tables import ALERTS, PROVIDER_CALLS, TWEETS
from tests.conftest import free_port
from tests.live_server import FakeServer, Request, Respond
from tests.test_cascade import items_in
from tests.test_storage import insert, store  # noqa: F401 (store is a fixture)

PATH = "/v1/chat/completions"
KEY_ENV = "DALLOSH_TEST_PRIVACY_KEY"
PHONE = "06 12 34 56 78"
EMAIL = "jeanne.martin@example.org"


# --------------------------------------------------------------------------- providers

@pytest.fixture(autouse=True)
def cloud_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, f"sk-test-{uuid.uuid4().hex}")


def model(request: Request) -> Respond:
    answer = [{"id": it["id"], "sentiment": "negative", "priority": 0, "topic": "outage",
               "team": "network_ops", "confidence": 0.9, "reason": "fake model"}
              for it in items_in(request)]
    return Respond(200, {"choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant",
                                                  "content": json.dumps({"items": answer})}}],
                         "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}})


def provider(url: str, name: str, zero_retention: bool) -> ProviderConfig:
    return ProviderConfig(name=name, tier="cloud", base_url=url + "/v1", model=f"{name}-model",
                          key_env=KEY_ENV, price_in_per_m=0.3, price_out_per_m=2.5,
                          context_tokens=32000, max_output_tokens=4096, timeout_s=2.0,
                          supports_json_schema=True, zero_retention=zero_retention)


def clean_tweet(id_: str, text: str, scrubbed: str | None) -> CleanTweet:
    return CleanTweet(id=id_, text=text, text_clean=text,
                      text_scrubbed=scrub_pii(text).text if scrubbed is None else scrubbed,
                      run_id="r", source="t", created_at="2026-03-12T10:00:00Z",
                      ingested_at="2026-03-12T10:00:00Z")


def sent_texts(server: FakeServer) -> list[str]:
    return [item["text"] for request in server.requests_to(PATH) for item in items_in(request)]


def test_a_tweet_without_scrubbed_text_never_reaches_a_provider_that_keeps_data(counter):
    """Before: an empty ``text_scrubbed`` was replaced by ``text_clean``, phone number
    included, and sent to the retaining cloud provider."""
    async def main():
        retaining = FakeServer().route(PATH, model)
        async with retaining:
            cascade = Cascade([provider(retaining.url, "cloud-keeps", zero_retention=False)],
                              OpenAICompatibleClient(trust_env=False), counter, TOPICS, DEFAULT_TEAMS,
                              breaker_factory=lambda: CircuitBreaker(cooldown_s=60))
            tweets = [clean_tweet("1", f"@free panne fibre, rappelez-moi au {PHONE}", scrubbed=""),
                      clean_tweet("2", f"@free toujours en panne, écrivez à {EMAIL}", scrubbed=None)]
            results, calls = await classify_window(tweets, cascade, RecentClassifications())
            by_id = {t.id: t for t in results}
            assert sorted(by_id) == ["1", "2"]  # every tweet classified once
            sent = sent_texts(retaining)
            assert sent, "the scrubbed tweet should still use the provider"
            assert all(PHONE not in text and EMAIL not in text for text in sent), sent
            assert by_id["2"].provider == "cloud-keeps"   # scrubbed: the provider may see it
            assert by_id["1"].provider == "rules"         # not scrubbed: a local tier
            assert sum(c.tweets for c in calls if c.provider == "cloud-keeps") == 1
    asyncio.run(main())


def test_a_tweet_without_scrubbed_text_may_use_a_zero_retention_provider(counter):
    async def main():
        retaining, zero = FakeServer().route(PATH, model), FakeServer().route(PATH, model)
        async with retaining, zero:
            cascade = Cascade([provider(retaining.url, "cloud-keeps", zero_retention=False),
                               provider(zero.url, "cloud-zdr", zero_retention=True)],
                              OpenAICompatibleClient(trust_env=False), counter, TOPICS, DEFAULT_TEAMS,
                              breaker_factory=lambda: CircuitBreaker(cooldown_s=60))
            tweet = clean_tweet("1", f"@free panne fibre, rappelez-moi au {PHONE}", scrubbed="")
            (result,), _ = await classify_window([tweet], cascade, RecentClassifications())
            assert result.provider == "cloud-zdr"
            assert sent_texts(retaining) == []
            assert any(PHONE in text for text in sent_texts(zero))  # it keeps nothing
    asyncio.run(main())


# --------------------------------------------------------------------------- ClickHouse

def classified(i: int, text: str, at: str) -> ClassifiedTweet:
    return ClassifiedTweet(**clean_tweet(str(i), text, scrubbed=None).to_dict() | {"created_at": at},
                           sentiment="negative", priority=0, topic="outage", team="network_ops",
                           confidence=0.9, tier="degraded", provider="rules", model="lexicon-v1",
                           reason="r", classified_at=at, version=1)


def test_alert_pages_and_emails_quote_scrubbed_tweets_only(store):
    """The detector rule's labels (examples included) go to the on-call webhook and to
    e-mail: the example tweets must be the scrubbed text, never the original."""
    at = datetime(2026, 3, 12, 14, 0, tzinfo=timezone.utc)
    iso = lambda t: t.isoformat().replace("+00:00", "Z")  # noqa: E731
    texts = [f"@free panne fibre à Bordeaux, rappelez-moi au {PHONE}",
             f"@free panne totale à Bordeaux, écrivez-moi à {EMAIL}"]
    insert(store, TWEETS, *(classified(i, t, iso(at)) for i, t in enumerate(texts)))
    insert(store, ALERTS, Alert(
        alert_id="a1", detector="burst", key="loc:Bordeaux", location="Bordeaux",
        severity="critical", status="firing", window_start=iso(at), window_end=iso(at + timedelta(minutes=5)),
        observed=40, expected=4, score=9.5, example_ids=["0", "1"], message="local incident (Bordeaux)",
        first_seen=iso(at), updated_at=iso(at)))
    sql = expand(queries.DETECTOR_ALERTS.sql, at - timedelta(hours=6), at + timedelta(minutes=5), 60)
    result = store.query(sql)
    (row,) = [dict(zip(result.column_names, r)) for r in result.result_rows]
    labels = " ".join(str(v) for v in row.values())
    assert PHONE not in labels and EMAIL not in labels, labels
    assert row["examples"].count(" | ") == 1, row["examples"]
    assert "panne fibre à Bordeaux" in row["examples"]   # the tweet is still quoted, scrubbed
    assert row["examples"] == " | ".join(scrub_pii(t).text for t in texts)


HOSTILE_BUDGETS = [
    "1 AS budget_burn, (SELECT groupArray(text) FROM dallosh.tweets) AS leaked --",
    "20) FROM dallosh.provider_calls UNION ALL SELECT 1, 2 --",
    "20' OR 1=1 --", "20\\' OR 1=1 --", "\\", "'", "20; DROP TABLE dallosh.tweets",
    "${__user.login}", "1e400", "nan", "-5", "", "２０", "20\x00",
]


@pytest.mark.parametrize("value", HOSTILE_BUDGETS)
def test_the_budget_variable_is_data_never_sql(store, value):
    """A viewer controls the textbox (and ?var-daily_budget_usd= in a link): whatever it
    holds, the panel's query keeps its two columns and runs; a non-number gives no burn.
    Before: the value was pasted raw into the SQL."""
    now = datetime.now(timezone.utc)
    insert(store, PROVIDER_CALLS, ProviderCall(
        call_id="c1", at=now.isoformat().replace("+00:00", "Z"), run_id="r", tier="cloud",
        provider="p", model="m", tweets=10, cost_usd=5.0))
    sql = expand(queries.BUDGET_BURN.sql, now - timedelta(days=1), now + timedelta(minutes=1), 60,
                 {"daily_budget_usd": value})
    result = store.query(sql)
    assert tuple(result.column_names) == ("spent_usd", "budget_burn")
    ((spent, burn),) = result.result_rows
    assert spent == pytest.approx(5.0)
    assert burn is None or burn == pytest.approx(0.0), (value, burn)
    assert store.query("SELECT count() FROM dallosh.tweets").result_rows == [(0,)]


def test_the_budget_variable_still_reads_a_number(store):
    now = datetime.now(timezone.utc)
    insert(store, PROVIDER_CALLS, ProviderCall(
        call_id="c1", at=now.isoformat().replace("+00:00", "Z"), run_id="r", tier="cloud",
        provider="p", model="m", tweets=10, cost_usd=5.0))
    for value, burn in (("20", 0.25), ("12.5", 0.4), (" 50 ", None)):
        sql = expand(queries.BUDGET_BURN.sql, now - timedelta(days=1), now + timedelta(minutes=1),
                     60, {"daily_budget_usd": value})
        ((_, got),) = store.query(sql).result_rows
        assert got == (pytest.approx(burn) if burn is not None else None), value


# --------------------------------------------------------------------------- metrics endpoint

def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def test_the_metrics_endpoint_listens_on_loopback_only_by_default():
    """Before: it bound 0.0.0.0, reachable from any network the host is on. 127.0.0.2 is
    another address of this host (any 127/8 address reaches a 0.0.0.0 listener) but not
    the loopback address the endpoint binds."""
    from stream_app.metrics import serve_metrics

    port = free_port()
    serve_metrics(port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert b"dallosh_messages_in" in response.read()
    assert not _answers("127.0.0.2", port)
    wide = free_port()
    serve_metrics(wide, addr="0.0.0.0")   # what a container scraped over its network asks for
    assert _answers("127.0.0.2", wide)
