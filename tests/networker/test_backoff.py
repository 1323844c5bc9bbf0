"""One capped exponential backoff for every retry loop: it never overflows, however long a
loop keeps failing (a float ``2 ** 1024`` does, and the loop would die of OverflowError)."""

from cobox.supervisor import Backoff
from networker.backoff import capped


def test_capped_grows_then_holds_at_the_cap_even_after_days_of_failures():
    assert [capped(1.0, 60.0, n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert capped(1.0, 60.0, 7) == 60.0
    for n in (1024, 1025, 10**6):
        assert capped(0.5, 300.0, n) == 300.0
    assert capped(1.0, 60.0, 0) == 1.0


def test_the_supervisors_backoff_survives_a_service_crash_looping_for_hours():
    assert Backoff().delay(1100, 0.5) == 45.0  # cap 60 s, jitter 0.5 at rnd 0.5
