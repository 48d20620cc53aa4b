"""The outage the durability tests stage must be whole: no connection carries it through."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.tcp_proxy import TcpProxy


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()
    listener.close()


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(1024):
            conn.sendall(data)


def _connect(port: int) -> socket.socket:
    # Not socket.create_connection: the test below holds the proxy's calls to it.
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(5)
    client.connect(("127.0.0.1", port))
    return client


def test_a_connection_set_up_while_the_proxy_is_cut_is_closed_not_forwarded(
    echo_server: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = TcpProxy(echo_server)
    proxy.start()
    with _connect(proxy.port) as before:
        before.sendall(b"ping")
        assert before.recv(4) == b"ping"

    # The next connection is accepted, then held while it opens its upstream side; the
    # proxy is cut in that moment.
    dialling, release = threading.Event(), threading.Event()
    real = socket.create_connection

    def held(*args: object, **kwargs: object) -> socket.socket:
        dialling.set()
        release.wait(5)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "create_connection", held)
    with _connect(proxy.port) as during:
        assert dialling.wait(5)
        proxy.cut()
        release.set()
        try:
            during.sendall(b"ping")
            answer = during.recv(4)
        except OSError:
            answer = b""
        assert answer == b"", "a connection set up across the cut carried traffic"
