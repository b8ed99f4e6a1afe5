"""The one event-loop factory: uvloop's loop when installed (the `fast` extra: cheaper per
socket than asyncio's, for scans with thousands of services in flight), else asyncio's."""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
