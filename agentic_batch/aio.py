"""Small asyncio helpers shared by the engine and the web layer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


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


def run_bounded(main: Coroutine[Any, Any, T], grace: float) -> T:
    """`asyncio.run(main)`, except that tasks still pending when `main` returns get `grace` seconds to
    honour their cancellation and are then left behind.

    `asyncio.run` waits for every leftover task without limit, so one agent coroutine that swallows
    its cancellation would keep a finished executor alive (holding its host lock) forever.
    """
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            leftovers = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in leftovers:
                task.cancel()
            if leftovers:
                _, stuck = loop.run_until_complete(asyncio.wait(leftovers, timeout=grace))
                if stuck:
                    log.warning("%d task(s) ignored their cancellation for %gs; left behind", len(stuck), grace)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()  # shuts the default thread pool down without waiting for stuck threads
