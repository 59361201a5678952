"""The account behind a Kubernetes client's readiness: silent past the bound is unready, with how
long and the last miss in one line; probes every half bound while it answers, every tenth after a
miss (a quick way back), so a healthy API sees one small request per ten seconds by default."""

from __future__ import annotations

from chaosbus.common.kubehealth import ApiHealth, verdict


def test_ready_until_the_api_has_been_silent_for_the_bound_then_says_how_long_and_why() -> None:
    h = ApiHealth(20.0, now=100.0)
    assert h.probe_due(100.0)  # the first probe at once
    h.answered(100.0)
    assert not h.probe_due(109.9) and h.probe_due(110.0)
    h.missed(110.0, "connection refused")
    assert h.unready(119.9) == ""  # one missed probe is not an outage
    assert not h.probe_due(111.9) and h.probe_due(112.0)
    h.missed(121.0, "connection refused")
    assert h.unready(121.0) == "Kubernetes API unanswered for 21 s (connection refused)"
    h.answered(123.0)
    assert h.unready(123.0) == "" and not h.probe_due(132.9)


def test_the_start_counts_as_an_answer() -> None:
    """A service that cannot reach the API from the start is unready after the bound, not at once."""
    h = ApiHealth(20.0, now=0.0)
    h.missed(0.1, "connection refused")
    assert h.unready(19.0) == ""
    assert h.unready(20.0).startswith("Kubernetes API unanswered for 20 s")


def test_a_refused_credential_is_a_miss_and_a_forbidden_version_an_answer() -> None:
    """401: every request the service makes fails, as in an outage. 403 on /version: the token was
    taken; a cluster may forbid anonymous discovery without its clients being broken."""
    assert verdict(200) == "" and verdict(403) == "" and verdict(404) == "" and verdict(429) == ""
    assert verdict(401) == "HTTP 401: the API server refuses this service's credentials"
    assert verdict(500) == "HTTP 500" and verdict(503) == "HTTP 503"
