"""X's documented reconnect delays, as pure functions of the attempt and the headers."""

from __future__ import annotations

import pytest

from connectors.live.backoff import (ExponentialBackoff, Failure, LinearBackoff, ReconnectPolicy,
                                     header_wait)

NOW = 1_800_000_000.0


def delays(policy: ReconnectPolicy, failure: Failure, n: int, headers=None) -> list[float]:
    return [policy.delay(failure, headers) for _ in range(n)]


def test_network_errors_back_off_linearly_by_250_ms_up_to_16_s():
    got = delays(ReconnectPolicy(), Failure.NETWORK, 66)
    assert got[:4] == [0.25, 0.5, 0.75, 1.0]
    assert got[63] == 16.0 and got[64:] == [16.0, 16.0]
    assert all(b - a == pytest.approx(0.25) for a, b in zip(got[:63], got[1:64], strict=True))


def test_http_errors_back_off_exponentially_from_5_s_up_to_320_s():
    assert delays(ReconnectPolicy(), Failure.HTTP, 9) == [5, 10, 20, 40, 80, 160, 320, 320, 320]


def test_rate_limits_back_off_exponentially_from_one_minute():
    assert delays(ReconnectPolicy(), Failure.RATE_LIMITED, 6) == [60, 120, 240, 480, 960, 960]


def test_a_dropped_healthy_stream_reconnects_at_once_then_backs_off():
    now = [0.0]
    policy = ReconnectPolicy(monotonic=lambda: now[0])
    policy.healthy()
    assert delays(policy, Failure.DROPPED, 3) == [0.0, 0.25, 0.5]
    now[0] = 61.0  # a stable connection later
    policy.healthy()
    assert policy.delay(Failure.STALL) == 0.0


def test_a_server_that_drops_every_connection_gets_the_backoff_not_a_loop():
    now = [0.0]
    policy = ReconnectPolicy(monotonic=lambda: now[0])
    got = []
    for _ in range(4):  # each connection delivers a little, then drops a second later
        policy.healthy()
        got.append(policy.delay(Failure.DROPPED))
        now[0] += 1.0
    assert got == [0.0, 0.25, 0.5, 0.75]


def test_a_stream_that_never_delivered_does_not_get_an_immediate_retry():
    assert delays(ReconnectPolicy(), Failure.DROPPED, 2) == [0.25, 0.5]


def test_healthy_data_resets_every_schedule():
    policy = ReconnectPolicy()
    delays(policy, Failure.HTTP, 3)
    delays(policy, Failure.NETWORK, 3)
    delays(policy, Failure.RATE_LIMITED, 2)
    policy.healthy()
    assert policy.delay(Failure.HTTP) == 5.0
    assert policy.delay(Failure.NETWORK) == 0.25
    assert policy.delay(Failure.RATE_LIMITED) == 60.0


def test_schedules_are_independent():
    policy = ReconnectPolicy()
    assert policy.delay(Failure.HTTP) == 5.0
    assert policy.delay(Failure.NETWORK) == 0.25
    assert policy.delay(Failure.HTTP) == 10.0


@pytest.mark.parametrize("headers, expected", [
    ({"x-rate-limit-reset": str(int(NOW) + 42)}, 42.0),               # X: epoch seconds
    ({"X-RateLimit-Reset": "2027-01-15T08:00:30.000Z"}, 30.0),         # Mastodon: ISO-8601
    ({"Retry-After": "7"}, 7.0),
    ({"retry-after": "Fri, 15 Jan 2027 08:01:00 GMT"}, 60.0),          # HTTP date
    ({"retry-after": "7", "x-rate-limit-reset": str(int(NOW) + 30)}, 30.0),  # the longer wins
    ({"x-rate-limit-reset": str(int(NOW) - 10)}, 0.0),                 # already past
    ({"retry-after": "soon", "x-rate-limit-reset": "later"}, None),
    ({}, None),
])
def test_header_wait(headers, expected):
    assert header_wait(headers, NOW) == expected


def test_rate_limit_headers_win_over_the_schedule_within_the_cap():
    policy = ReconnectPolicy(clock=lambda: NOW)
    assert policy.delay(Failure.RATE_LIMITED, {"x-rate-limit-reset": str(int(NOW) + 900)}) == 900.0
    assert policy.delay(Failure.RATE_LIMITED, {"retry-after": "86400"}) == 960.0  # clock skew guard
    # A reset already in the past would make us hammer: the schedule applies (3rd step).
    assert policy.delay(Failure.RATE_LIMITED, {"x-rate-limit-reset": str(int(NOW) - 5)}) == 240.0


def test_scaled_policy_keeps_the_shape():
    policy = ReconnectPolicy.scaled(0.01)
    assert delays(policy, Failure.HTTP, 3) == pytest.approx([0.05, 0.1, 0.2])
    assert delays(policy, Failure.NETWORK, 2) == pytest.approx([0.0025, 0.005])


def test_building_blocks():
    linear, exponential = LinearBackoff(step=1, cap=2), ExponentialBackoff(start=1, cap=3, factor=3)
    assert [linear.next_delay() for _ in range(3)] == [1, 2, 2]
    assert [exponential.next_delay() for _ in range(3)] == [1, 3, 3]
    linear.reset()
    assert linear.next_delay() == 1
