"""A counting proxy in front of dockerd's unix socket.

Tests point ``dockerops.docker_url`` at it to count what a real Salt run asks
the daemon (list calls, image inspects, ``/version``), whatever process and
code path makes the request. Bytes are forwarded as they are; each request
line seen from a client is recorded.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from pathlib import Path

# A request line of Docker's API ("GET /v1.41/containers/json?all=1 HTTP/1.1").
REQUEST_LINE = re.compile(rb"(GET|HEAD|POST|PUT|DELETE) (/[^ \r\n]*) HTTP/1\.[01]\r\n")


class DockerProxy:
    """Forwards ``unix://<path>`` to the daemon's socket and records requests."""

    def __init__(self, path: Path, daemon_socket: str) -> None:
        self.path = path
        self.daemon_socket = daemon_socket
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._closed = False

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def start(self) -> DockerProxy:
        self._server.bind(str(self.path))
        self._server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def close(self) -> None:
        self._closed = True
        self._server.close()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def seen(self, method: str, pattern: str) -> list[str]:
        """The paths (API version stripped) of recorded ``method`` requests
        whose path matches the regular expression ``pattern``."""
        with self._lock:
            found = list(self.requests)
        paths = [re.sub(r"^/v[0-9.]+", "", path) for m, path in found if m == method]
        return [path for path in paths if re.search(pattern, path)]

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            daemon = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                daemon.connect(self.daemon_socket)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pipe, args=(client, daemon, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(daemon, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        pending = b""
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if record:
                    pending += data
                    matches = list(REQUEST_LINE.finditer(pending))
                    with self._lock:
                        for match in matches:
                            self.requests.append((match[1].decode(), match[2].decode()))
                    # Keep a tail: a request line may be split across reads.
                    end = matches[-1].end() if matches else 0
                    pending = pending[max(end, len(pending) - 512) :]
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
