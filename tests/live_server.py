"""A scriptable HTTP/1.1 server on 127.0.0.1 for the live connector tests, on real
sockets (asyncio streams), so faults happen at the byte level: a line cut in the middle
then a TCP reset, a clean end, silence (stall), keep-alives, error statuses.

Each path has a queue of actions; every request to it takes the next one (the last
one left is reused). An action is a :class:`Respond`, a :class:`Stream` or a function
of the :class:`Request` returning one of them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union
from urllib.parse import parse_qs, urlsplit

RESET = "reset"  # abort the connection with a TCP RST
CUT = "cut"      # close the socket (FIN) without ending the chunked body
HOLD = "hold"    # send nothing more until the client goes away


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Respond:
    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        headers = {"Content-Type": "application/json", **self.headers,
                   "Content-Length": str(len(body)), "Connection": "close"}
        writer.write(_head(self.status, headers))
        writer.write(body)  # not concatenated: a test may measure the client's memory
        await writer.drain()


@dataclass
class Stream:
    """A chunked response (200 unless ``status`` says otherwise): bytes steps are sent as
    chunks, numbers are pauses, and RESET / CUT / HOLD end it; without them the body ends
    cleanly. Each chunk waits for the socket to drain: the server's memory stays small
    whatever the body's size."""

    steps: Sequence[Union[bytes, float, str]]
    content_type: str = "application/json"
    status: int = 200

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_head(self.status, {"Content-Type": self.content_type,
                                 "Transfer-Encoding": "chunked", "Connection": "close"}))
        await writer.drain()
        for step in self.steps:
            if isinstance(step, bytes):
                writer.write(b"%x\r\n%s\r\n" % (len(step), step))
                await writer.drain()
            elif isinstance(step, (int, float)):
                await asyncio.sleep(step)
            elif step == RESET:
                await asyncio.sleep(0.05)  # let the client read what was sent first
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            elif step == CUT:
                return
            elif step == HOLD:
                await reader.read()  # returns at EOF: the client hung up
                return
        writer.write(b"0\r\n\r\n")
        await writer.drain()


Action = Union[Respond, Stream, Callable[[Request], Union[Respond, Stream]]]


class FakeServer:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._routes: dict[str, list[Action]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None
        self.url = ""

    def route(self, path: str, *actions: Action) -> "FakeServer":
        self._routes.setdefault(path, []).extend(actions)
        return self

    async def idle(self, timeout: float = 1.0) -> bool:
        """Whether every connection is closed (within ``timeout``): a client that stopped
        must not leave its stream open."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._tasks and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        return not self._tasks

    def requests_to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    async def __aenter__(self) -> "FakeServer":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._server is not None
        self._server.close()
        # Hang up on open connections so that their handlers end by themselves
        # (cancelling them makes Python 3.11's start_server log a spurious error).
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            request = await _read_request(reader)
            if request is None:
                return
            self.requests.append(request)
            action = self._next_action(request.path)
            if callable(action) and not isinstance(action, (Respond, Stream)):
                action = action(request)
            await action.run(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()

    def _next_action(self, path: str) -> Action:
        queue = self._routes.get(path)
        if not queue:
            return Respond(404, {"error": f"no route {path}"})
        return queue.pop(0) if len(queue) > 1 else queue[0]


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length") or 0))
    url = urlsplit(target)
    query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
    return Request(method, url.path, query, headers, body)


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


class ListSink:
    """An in-memory sink with the RawProducer interface (send_raw, send_dead_letter, flush)."""

    def __init__(self) -> None:
        self.raw: list[dict[str, Any]] = []
        self.dead: list[Any] = []
        self.flushes = 0

    async def send_raw(self, record: Any) -> None:
        self.raw.append(dict(record))

    async def send_dead_letter(self, dead: Any) -> None:
        self.dead.append(dead)

    async def flush(self) -> None:
        self.flushes += 1

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.raw]


class SleepRecorder:
    """Stands in for asyncio.sleep in reconnect loops: records each delay, waits none."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


async def run_source(source: Any, server: "FakeServer", sleep: "SleepRecorder", *,
                     max_events: int, checkpoint: Path | None = None
                     ) -> tuple[Any, ListSink, Any, list[float]]:
    """Run ``source`` (an entered live source) through a LiveRunner into a ListSink and
    check what every connector test checks: the stream was closed and counts reconcile."""
    from connectors.live.runner import LiveRunner
    sink = ListSink()
    runner = LiveRunner(source, sink, checkpoint=checkpoint, max_events=max_events)
    counts = await asyncio.wait_for(runner.run(), 5)
    assert await server.idle(), "the stream was left open after the run"
    assert counts.reconciles, counts.summary_line()
    return counts, sink, source.stats, sleep.delays
