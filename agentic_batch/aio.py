"""Small asyncio helpers shared by the engine and the web layer."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set or `timeout` passes; True if it was set.

    Not `asyncio.wait_for(event.wait(), ...)`: on Python 3.11 that can swallow a cancellation that
    arrives just as the event is set, and a loop around it then never ends (seen as an executor that
    hung on shutdown when a notification and a cancel crossed).
    """
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=max(0.0, timeout))
    finally:
        waiter.cancel()
    return bool(done)
