"""The protocol's time caps, on real sleeps (no server needed)."""


def test_warmup_never_starts_a_request_expected_to_overrun_its_budget():
    import time

    from serveprof.measure.protocol import run_warmup

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
