"""Functions the ``python`` tool kind calls in the tests, as ``tool_functions:<name>``.

``tests/`` is on ``sys.path`` under pytest (it has no ``__init__.py``); tests build the import path from
``tool_functions.__name__`` so it keeps working if that changes.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


def add(a: float, b: float) -> dict[str, Any]:
    """Sync: runs in a worker thread, and says which one."""
    return {"sum": a + b, "thread": threading.get_ident()}


async def order_status(order_id: str) -> dict[str, Any]:
    """Async: awaited on the call's event loop."""
    await asyncio.sleep(0)
    return {"order_id": order_id, "status": "shipped", "thread": threading.get_ident()}


def get_weather(city: str) -> dict[str, Any]:
    """Deterministic weather for the pipeline tests."""
    return {"city": city, "temperature_c": 21 if city == "Paris" else 12}


def explode(reason: str = "boom") -> None:
    raise RuntimeError(f"exploded: {reason}")


async def explode_async(reason: str = "boom") -> None:
    await asyncio.sleep(0)
    raise ValueError(f"async exploded: {reason}")


async def dawdle(secs: float = 5.0) -> dict[str, Any]:
    """Answers far too late for any sensible tool timeout."""
    await asyncio.sleep(secs)
    return {"late": True}


PINS_SEEN: list[str] = []


def check_pin(pin: str) -> dict[str, Any]:
    """A ``sensitive`` tool: it gets the PIN (kept here, so a test can see it arrived) and never echoes it."""
    PINS_SEEN.append(pin)
    return {"status": "verified"}


async def look_up_booking(secs: float) -> dict[str, Any]:
    """A booking system that takes ``secs`` to answer (slow-tool fillers)."""
    await asyncio.sleep(secs)
    return {"booking": "confirmed", "took_secs": secs}
