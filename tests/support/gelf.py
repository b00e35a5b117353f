"""A GELF UDP receiver for tests, on 127.0.0.1: decodes what Docker's gelf driver sends.

Docker sends each record as one datagram: JSON compressed with gzip (its
default), zlib, or not at all; a record larger than a datagram is split in
GELF chunks (magic 0x1e 0x0f, an 8-byte message id, sequence number and
count), reassembled here before decompression.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import zlib
from typing import Any

CHUNK_MAGIC = b"\x1e\x0f"


def decode(payload: bytes) -> dict[str, Any]:
    """One whole GELF message (chunks already joined): gzip, zlib or plain JSON."""
    if payload[:2] == b"\x1f\x8b":
        payload = gzip.decompress(payload)
    elif payload[:1] == b"\x78":
        payload = zlib.decompress(payload)
    message: dict[str, Any] = json.loads(payload)
    return message


class GelfReceiver:
    """``with GelfReceiver() as gelf:`` listens on ``gelf.address`` (udp://127.0.0.1:PORT)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.messages: list[dict[str, Any]] = []
        self.chunked = 0  # messages that came in chunks
        self._chunks: dict[bytes, dict[int, bytes]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> str:
        return f"udp://127.0.0.1:{self.port}"

    def __enter__(self) -> GelfReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                datagram = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.receive(datagram)

    def receive(self, datagram: bytes) -> None:
        """Take one datagram: a whole message or one of its chunks."""
        if datagram[:2] == CHUNK_MAGIC:
            message_id, number, count = datagram[2:10], datagram[10], datagram[11]
            parts = self._chunks.setdefault(message_id, {})
            parts[number] = datagram[12:]
            if len(parts) < count:
                return
            del self._chunks[message_id]
            datagram = b"".join(parts[i] for i in range(count))
            self.chunked += 1
        message = decode(datagram)
        with self._lock:
            self.messages.append(message)

    def wait_for(self, text: str, timeout: float = 20.0) -> dict[str, Any]:
        """The first message whose ``short_message`` holds ``text``."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for message in self.messages:
                    if text in str(message.get("short_message", "")):
                        return message
                got = list(self.messages)
            if time.monotonic() > deadline:
                raise AssertionError(f"no GELF message with {text!r} within {timeout}s: {got}")
            time.sleep(0.1)
