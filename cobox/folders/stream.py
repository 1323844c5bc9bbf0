"""Chunk a local file in a worker thread, handing chunks to the event loop through a small
queue: memory stays bounded whatever the file size and the loop never blocks on the disk."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from pathlib import Path
from typing import Any

from .chunking import Chunker


async def chunks_of(path: Path, chunker: Chunker) -> Any:
    """Chunk a file in a worker thread, handing chunks over through a small queue (bounded
    memory, the event loop never blocks on the disk)."""
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=4)
    stop = threading.Event()

    def produce() -> None:
        try:
            with open(path, "rb") as f:
                for c in chunker.chunks(f):
                    while not stop.is_set():
                        try:
                            q.put(c, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            q.put(None)
        except BaseException as e:
            q.put(e)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = await asyncio.to_thread(q.get)
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()
        await asyncio.to_thread(thread.join, 5)
