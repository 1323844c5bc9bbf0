"""The installed version of cobox (from the package metadata; the source tree's pyproject otherwise)."""

from __future__ import annotations

from importlib import metadata


def _version() -> str:
    try:
        return metadata.version("cobox")
    except metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _version()
