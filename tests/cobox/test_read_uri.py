"""Where ``group join`` and ``seed`` take the invite from (no daemon)."""

from __future__ import annotations

import io

import pytest

from cobox.commands_groups import read_uri
from cobox.errors import UsageError


class Stdin(io.StringIO):
    def __init__(self, text: str, tty: bool) -> None:
        super().__init__(text)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_a_uri_argument_is_used_as_it_is(monkeypatch):
    monkeypatch.setattr("sys.stdin", Stdin("cobox://join/other\n", tty=False))
    assert read_uri("cobox://join/x") == "cobox://join/x"


def test_dash_reads_one_line_of_stdin(monkeypatch):
    monkeypatch.setattr("sys.stdin", Stdin("  cobox://join/x  \nmore\n", tty=False))
    assert read_uri("-") == "cobox://join/x"


def test_a_terminal_is_asked_without_echo(monkeypatch):
    asked: list[str] = []
    monkeypatch.setattr("sys.stdin", Stdin("", tty=True))
    monkeypatch.setattr("getpass.getpass", lambda prompt: asked.append(prompt) or "cobox://seed/y")
    assert read_uri("-") == "cobox://seed/y"
    assert asked == ["invite URI (not shown): "]


def test_nothing_given_is_a_usage_error(monkeypatch):
    monkeypatch.setattr("sys.stdin", Stdin("\n", tty=False))
    with pytest.raises(UsageError, match="no invite URI given"):
        read_uri("-")
