"""Login codes and sessions of the dashboard, with a fake clock."""

from __future__ import annotations

from cobox.web.sessions import MAX_CODES, MAX_SESSIONS, Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_code_is_good_once():
    s = Sessions(Clock())
    code = s.new_code()
    redeemed = s.redeem(code)
    assert redeemed is not None
    session_id, session = redeemed
    assert s.get(session_id) == session
    assert s.redeem(code) is None
    assert s.redeem("") is None and s.redeem("made-up") is None


def test_a_code_expires_after_its_ttl():
    clock = Clock()
    s = Sessions(clock, code_ttl=60)
    early, late = s.new_code(), s.new_code()
    clock.now += 59.9
    assert s.redeem(early) is not None
    clock.now += 0.1
    assert s.redeem(late) is None


def test_sessions_expire_and_end():
    clock = Clock()
    s = Sessions(clock, session_ttl=100)
    sid, _ = s.redeem(s.new_code())  # type: ignore[misc]
    other, _ = s.redeem(s.new_code())  # type: ignore[misc]
    s.end(other)
    assert s.get(other) is None and s.get(sid) is not None
    clock.now += 100
    assert s.get(sid) is None
    assert s.get("") is None


def test_a_session_secret_is_not_the_code_and_not_guessable_from_it():
    s = Sessions(Clock())
    code = s.new_code()
    secret, _ = s.redeem(code)  # type: ignore[misc]
    assert secret != code and s.get(code) is None
    assert s.get(secret[:-1]) is None and len(secret) >= 43


def test_codes_and_sessions_are_bounded_oldest_first():
    s = Sessions(Clock())
    codes = [s.new_code() for _ in range(MAX_CODES + 3)]
    assert all(s.redeem(c) is None for c in codes[:3])
    ids = [s.redeem(c)[0] for c in codes[3:]]  # type: ignore[index]
    ids += [s.redeem(s.new_code())[0] for _ in range(MAX_SESSIONS)]  # type: ignore[index]
    assert all(s.get(i) is None for i in ids[:-MAX_SESSIONS])
    assert all(s.get(i) is not None for i in ids[-MAX_SESSIONS:])
