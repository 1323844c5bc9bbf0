"""The bounded throughput history behind the dashboard's plot."""

from __future__ import annotations

from cobox.web.throughput import Throughput


def test_history_keeps_the_latest_samples_only():
    t = Throughput(limit=3)
    assert t.latest() is None and t.history() == []
    for k in range(5):
        t.record(100.0 + k, {"g": (k, 10 * k)}, (k, 2 * k))
    assert [s["t"] for s in t.history()] == [102.0, 103.0, 104.0]
    assert t.latest() == {"t": 104.0, "sent": 4, "received": 8, "groups": {"g": {"entries": 4, "bytes": 40}}}
