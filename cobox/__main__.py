"""``python -m cobox``: the same as the ``cobox`` command."""

from cobox.cli import run

run()
