"""A one-way channel of events from a worker thread to the event loop, with cancellation.

Training and text generation run in worker threads so the event loop keeps answering
other requests. A worker :meth:`~EventChannel.put`\\ s events; the streaming response
iterates the channel with ``async for``; either side may end it: the worker by
:meth:`~EventChannel.close`, the response (client gone, Stop pressed) by
:meth:`~EventChannel.cancel`, which the worker polls between steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["EventChannel"]

_END = object()


class EventChannel:
    """Events from one worker thread to one async consumer.

    Parameters
    ----------
    loop : asyncio.AbstractEventLoop
        The loop the consumer runs on (``asyncio.get_running_loop()`` of the request).

    Examples
    --------
    >>> async def consume(channel):                       # doctest: +SKIP
    ...     async for event in channel:
    ...         print(event)
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._cancelled = threading.Event()
        self._closed = False

    # ---------------------------------------------------------------- worker side
    def put(self, event: Any) -> None:
        """Send ``event`` to the consumer (thread-safe; dropped once the loop is gone)."""
        with contextlib.suppress(RuntimeError):  # the loop has shut down: nobody listens any more
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    def close(self) -> None:
        """No more events: the consumer's ``async for`` ends after the ones already sent."""
        if not self._closed:
            self._closed = True
            self.put(_END)

    @property
    def cancelled(self) -> bool:
        """True once the consumer asked the worker to stop."""
        return self._cancelled.is_set()

    # ---------------------------------------------------------------- consumer side
    def cancel(self) -> None:
        """Ask the worker to stop at its next check (thread-safe, idempotent)."""
        self._cancelled.set()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._events()

    async def _events(self) -> AsyncIterator[Any]:
        while True:
            event = await self._queue.get()
            if event is _END:
                return
            yield event
