"""Fixtures of the networker tests: ``make_device`` (in-process replicating devices)."""

from tests.networker.devices import make_device  # noqa: F401  (a fixture, found by pytest here)
