"""A loopback HTTP server that replays recorded responses and checks each request.

A recording is a text file: `#` note lines, then an HTTP response as sent (status line,
headers, blank line, body). The server answers every request with the current
recording, unless the test's `check` finds problems with the request: then it answers
418 with the problems, and keeps them in `problems` for the test to assert on.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RECORDINGS = Path(__file__).resolve().parent / "recordings"


@dataclass(frozen=True)
class Recording:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    @classmethod
    def load(cls, name: str) -> Recording:
        lines = (RECORDINGS / name).read_text(encoding="utf-8").splitlines(keepends=True)
        lines = lines[next(i for i, line in enumerate(lines) if not line.startswith("#")) :]
        _, status, reason = lines[0].rstrip("\r\n").split(" ", 2)
        blank = next(i for i, line in enumerate(lines) if not line.strip())
        headers = [_header(line) for line in lines[1:blank]]
        return cls(int(status), reason, headers, "".join(lines[blank + 1 :]).encode())

    def header(self, name: str) -> str:
        return next(v for k, v in self.headers if k.lower() == name.lower())

    def sse_events(self) -> Iterator[tuple[str | None, dict[str, Any]]]:
        """(event name, JSON data) of each event of an event-stream body."""
        for block in self.body.decode().split("\n\n"):
            fields = dict(_header(line) for line in block.splitlines() if ":" in line)
            if fields.get("data", "[DONE]") != "[DONE]":
                yield fields.get("event"), json.loads(fields["data"])


def _header(line: str) -> tuple[str, str]:
    name, _, value = line.rstrip("\r\n").partition(":")
    return name.strip(), value.strip()


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


Check = Callable[[Received], list[str]]


@dataclass
class ReplayServer:
    recording: Recording
    check: Check
    received: list[Received] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> ReplayServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, request: Received) -> Recording:
        self.received.append(request)
        problems = self.check(request)
        if not problems:
            return self.recording
        self.problems.extend(problems)
        body = json.dumps({"replay_problems": problems}).encode()
        return Recording(418, "Request Did Not Match", [("content-type", "application/json")], body)


def _handler(server: ReplayServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {"unparsed": raw.decode(errors="replace")}
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = server.answer(Received("POST", self.path, headers, body))
            self.send_response(reply.status, reply.reason)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("content-length", str(len(reply.body)))
            self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
