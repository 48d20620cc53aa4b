"""A TCP forwarder a test can cut and restore: a database that goes away and comes back.

`silence` is the other way a server goes away: the connections open at that moment stop
carrying anything, with no reset (a failover behind a NAT that dropped their state),
while new ones are forwarded as before.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._silenced: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        if listener is not None:
            # close() alone leaves the thread blocked in accept() accepting on Linux.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def silence(self) -> None:
        """The connections open now get no more bytes either way, and no reset."""
        with self._lock:
            self._silenced.update(self._sockets)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                # Accepted just before a cut, and set up after it took the open sockets:
                # left alone, this connection would carry the outage through.
                survived_cut = self._listener is not listener
                if not survived_cut:
                    self._sockets += [client, upstream]
            if survived_cut:
                client.close()
                upstream.close()
                return
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if source in self._silenced:
                    continue  # swallowed: the peer hears nothing, not even a close
                sink.sendall(data)
        if source in self._silenced:
            return
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
