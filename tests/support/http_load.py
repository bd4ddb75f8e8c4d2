"""Thousands of concurrent HTTP calls from one asyncio loop (aiohttp): slow calls held at
once, SSE streams timed chunk by chunk, bursts of new connections. Used by tests and bench."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")


@dataclass
class Call:
    """One call: when it started and ended (monotonic seconds), time to its response headers,
    and its status code (or the exception's name) with the headers and body it got."""

    start: float
    end: float
    ttfb: float | None
    status: int | str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def seconds(self) -> float:
        """How long the whole call took."""
        return self.end - self.start


@dataclass
class Stream:
    """One SSE stream: its status and each data event with the Unix time it arrived."""

    status: int | str
    raw: list[tuple[float, bytes]] = field(default_factory=list)

    @property
    def events(self) -> list[tuple[float, dict[str, Any]]]:
        """The events, parsed (after the stream: parsing thousands of chunks as they come
        would leave the garbage collector pausing the very loop that times them)."""
        return [(at, json.loads(data)) for at, data in self.raw]


def _connector(new_connections: bool) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(limit=0, force_close=new_connections)  # no client-side cap


async def _call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    data: bytes | None,
    headers: Mapping[str, str],
    timeout: float,
) -> Call:
    start = time.monotonic()
    ttfb = None
    try:
        async with session.request(
            method, url, data=data, headers=dict(headers), timeout=aiohttp.ClientTimeout(timeout)
        ) as response:
            ttfb = time.monotonic() - start
            body = await response.read()
            return Call(
                start, time.monotonic(), ttfb, response.status, dict(response.headers), body
            )
    except (aiohttp.ClientError, TimeoutError) as error:
        return Call(start, time.monotonic(), ttfb, type(error).__name__)


async def _gather(
    count: int, spread: float, new_connections: bool, one: Callable[..., Awaitable[T]]
) -> list[T]:
    """`count` runs of `one`, started together or evenly over `spread` seconds."""
    async with aiohttp.ClientSession(connector=_connector(new_connections)) as session:

        async def started(number: int) -> T:
            await asyncio.sleep(spread * number / count)
            return await one(session)

        return list(await asyncio.gather(*(started(n) for n in range(count))))


def calls_at_once(
    url: str,
    count: int,
    *,
    method: str = "POST",
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60,
    new_connections: bool = False,
    spread: float = 0.0,
) -> list[Call]:
    """`count` calls started together (or evenly over `spread` seconds), each on a connection
    of its own; returns when every one has ended. `new_connections` also closes each
    connection after its call."""

    async def one(session: aiohttp.ClientSession) -> Call:
        return await _call(session, method, url, data, headers or {}, timeout)

    return asyncio.run(_gather(count, spread, new_connections, one))


async def _stream(
    session: aiohttp.ClientSession,
    url: str,
    data: bytes,
    headers: Mapping[str, str],
    timeout: float,
) -> Stream:
    try:
        async with session.post(
            url, data=data, headers=dict(headers), timeout=aiohttp.ClientTimeout(timeout)
        ) as response:
            stream = Stream(response.status)
            async for line in response.content:
                if line.startswith(b"data: "):
                    stream.raw.append((time.time(), line[6:]))
            return stream
    except (aiohttp.ClientError, TimeoutError) as error:
        return Stream(type(error).__name__)


def streams_at_once(
    url: str,
    count: int,
    data: bytes,
    headers: Mapping[str, str] | None = None,
    timeout: float = 120,
    spread: float = 0.0,
) -> list[Stream]:
    """`count` SSE streams opened together (or evenly over `spread` seconds); every event
    timed as it arrives."""

    async def one(session: aiohttp.ClientSession) -> Stream:
        return await _stream(session, url, data, headers or {}, timeout)

    return asyncio.run(_gather(count, spread, False, one))


def held_connections(
    url: str,
    connections: int,
    seconds: float,
    data: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    stagger: float = 0.0,
    timeout: float = 60,
    seed: int = 104,
) -> list[Call]:
    """`connections` clients, each calling `url` again as soon as its last call ended, for
    `seconds`; each client's first call waits a random part of `stagger` seconds, so that a
    steady load is measured rather than one burst of simultaneous calls."""
    offsets = random.Random(seed)

    async def client(session: aiohttp.ClientSession, until: float, wait: float) -> list[Call]:
        await asyncio.sleep(wait)
        calls = []
        while time.monotonic() < until:
            calls.append(await _call(session, "POST", url, data, headers or {}, timeout))
        return calls

    async def run() -> list[Call]:
        until = time.monotonic() + seconds
        async with aiohttp.ClientSession(connector=_connector(False)) as session:
            waits = [offsets.uniform(0, stagger) for _ in range(connections)]
            done = await asyncio.gather(*(client(session, until, w) for w in waits))
        return [call for calls in done for call in calls]

    return asyncio.run(run())
