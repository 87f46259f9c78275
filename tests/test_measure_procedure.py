"""The protocol's counts and time caps, on real sleeps (no server needed; the measurement CLI tests run it against real servers)."""


def test_warmup_never_starts_a_request_expected_to_overrun_its_budget():
    import time

    from serveprof.measure.procedure import run_warmup

    sent = []

    def send(request):
        sent.append(request)
        time.sleep(0.05)

    def never(error, what):
        return error

    # 50 ms requests against a 0.12 s budget: the third would end at about 0.15 s.
    assert run_warmup(send, "r", 10, 0.12, never, expected_ms=50) == 2
    # A first AoT of 200 ms already exceeds a 0.1 s budget: no warm-up at all.
    assert run_warmup(send, "r", 10, 0.1, never, expected_ms=200) == 0
    # The count cap still applies when time is plentiful.
    assert run_warmup(send, "r", 3, 10, never, expected_ms=1) == 3
    assert len(sent) == 5


def sleeper(seconds: float, sent: list):
    import time

    def send(request):
        sent.append(request)
        time.sleep(seconds)

    return send


def test_timed_requests_stop_at_the_request_count_when_time_allows():
    from serveprof.measure.procedure import run_timed

    sent: list = []
    series = run_timed(
        sleeper(0.001, sent), "r", requests=25, max_seconds=30, min_requests=3, on_error=lambda error, what: error
    )
    assert len(series.latencies_ms) == len(sent) == 25
    assert not series.truncated and series.truncated_reason is None
    assert all(0.9 <= latency < 500 for latency in series.latencies_ms)  # each brackets one 1 ms send


def test_timed_requests_stop_at_the_time_cap_and_say_so():
    from serveprof.measure.procedure import run_timed

    sent: list = []
    series = run_timed(
        sleeper(0.05, sent), "r", requests=1000, max_seconds=0.3, min_requests=2, on_error=lambda error, what: error
    )
    assert 2 <= len(series.latencies_ms) <= 7  # 0.3 s of 50 ms requests, plus the one under way
    assert series.truncated
    assert series.truncated_reason == f"max_seconds (0.3 s) reached after {len(series.latencies_ms)} requests"


def test_min_requests_are_made_even_past_the_time_cap_but_never_more_than_requests():
    from serveprof.measure.procedure import run_timed

    sent: list = []
    series = run_timed(
        sleeper(0.1, sent), "r", requests=1000, max_seconds=0.01, min_requests=4, on_error=lambda error, what: error
    )
    assert len(series.latencies_ms) == 4 and series.truncated and series.elapsed_s >= 0.4
    series = run_timed(
        sleeper(0.0, []), "r", requests=2, max_seconds=0.01, min_requests=5, on_error=lambda error, what: error
    )
    assert len(series.latencies_ms) == 2 and not series.truncated


def test_a_failed_request_raises_what_on_error_makes_of_it_naming_the_request():
    import pytest

    from serveprof.measure.procedure import run_timed

    calls = []

    def send(request):
        calls.append(request)
        if len(calls) == 3:
            raise ConnectionError("server gone")

    def on_error(error, what):
        return RuntimeError(f"{what}: {error}")

    with pytest.raises(RuntimeError, match=r"^timed request 3: server gone$"):
        run_timed(send, "r", requests=10, max_seconds=30, min_requests=1, on_error=on_error)
