"""A real etcd (Debian's etcd-server) on 127.0.0.1, for the config-from-etcd tests.

One member, its client and peer ports free ports on 127.0.0.1, its data in a
temporary directory: ``stop()`` and ``start()`` again keep the data (and the
ports), so a test can take the store away mid-way and bring it back. The
helpers write through etcd's HTTP/JSON gateway, as dockerops reads it.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.registry import free_port

ETCD = "etcd"
STARTUP_TIMEOUT = 30.0


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


@dataclass(frozen=True)
class Tls:
    """A private CA, a server certificate for 127.0.0.1 and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls(base: Path) -> Tls:
    """Fresh keys and certificates (openssl), valid for a day."""
    base.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=base)

    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
            "-subj", "/CN=dockerops test CA")  # fmt: skip
    # etcd's gateway dials etcd itself with the server's certificate: it is a client's too.
    for name, usage in (("server", "serverAuth,clientAuth"), ("client", "clientAuth")):
        (base / f"{name}.ext").write_text(
            f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n"
        )
        openssl("req", *curve, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}")  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "1",
                "-extfile", f"{name}.ext")  # fmt: skip
    return Tls(
        base / "ca.crt", base / "server.crt", base / "server.key",
        base / "client.crt", base / "client.key",
    )  # fmt: skip


class Etcd:
    def __init__(self, base: Path, tls: Tls | None = None) -> None:
        """``tls``: serve HTTPS only, and ask clients for a certificate of the CA."""
        self.base = base
        self.tls = tls
        self.client_port = free_port()
        self.peer_port = free_port()
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.client_port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.token: str | None = None  # root's, while authentication is on

    def start(self, timeout: float = STARTUP_TIMEOUT) -> Etcd:
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = open(self.base / "etcd.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [
                ETCD,
                "--name=test",
                f"--data-dir={self.base / 'data'}",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=test={peer}",
                "--log-level=warn",
                "--logger=zap",
                *self._tls_flags(),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.token = None  # simple tokens do not survive a restart
        deadline = time.monotonic() + timeout
        while True:
            try:
                # A range answers only once the member has a leader.
                self.call("/v3/kv/range", {"key": b64("/")}, auth=False)
                return self
            except (OSError, RuntimeError) as err:
                if "user name is empty" in str(err):  # auth is on: it answers
                    return self
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        "etcd did not start: "
                        + (self.base / "etcd.log").read_text(errors="replace")[-2000:]
                    ) from None
                time.sleep(0.1)

    def _tls_flags(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            f"--cert-file={self.tls.server_cert}",
            f"--key-file={self.tls.server_key}",
            f"--trusted-ca-file={self.tls.ca}",
            "--client-cert-auth",
        ]

    def _context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        return context

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)
        self.process = None

    def call(self, path: str, body: dict[str, Any], auth: bool = True) -> dict[str, Any]:
        """POST ``body`` to the gateway; RuntimeError with etcd's message on an error."""
        headers = {"Content-Type": "application/json"}
        if auth and self.token:
            headers["Authorization"] = self.token
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10, context=self._context()) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"etcd {path}: {err.read().decode(errors='replace')}") from None

    def revision(self) -> int:
        return int(self.call("/v3/kv/range", {"key": b64("/")})["header"]["revision"])

    def put(self, key: str, value: str | bytes) -> int:
        """Set ``key``; the revision of the put."""
        answer = self.call("/v3/kv/put", {"key": b64(key), "value": b64(value)})
        return int(answer["header"]["revision"])

    def delete(self, key: str) -> int:
        """Delete ``key``; the store's revision after it."""
        answer = self.call("/v3/kv/deleterange", {"key": b64(key)})
        return int(answer["header"]["revision"])

    def compact(self, revision: int) -> None:
        """Forget the history before ``revision`` (physically, before returning)."""
        self.call("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    def add_user(self, name: str, password: str, role: str, prefix: str | None = None) -> None:
        """A user with ``role``; a role other than root may read ``prefix`` only."""
        try:
            self.call("/v3/auth/role/add", {"name": role})
        except RuntimeError as err:
            if "already exists" not in str(err):
                raise
        if prefix is not None:
            end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            self.call(
                "/v3/auth/role/grant",
                {
                    "name": role,
                    "perm": {"perm_type": "READ", "key": b64(prefix), "range_end": b64(end)},
                },
            )
        self.call("/v3/auth/user/add", {"name": name, "password": password})
        self.call("/v3/auth/user/grant", {"user": name, "role": role})

    def enable_auth(self, root_password: str) -> None:
        """Authentication on, with a root user (its token kept for the helpers)."""
        self.add_user("root", root_password, "root")
        self.call("/v3/auth/enable", {})
        self.login("root", root_password)

    def login(self, name: str, password: str) -> None:
        self.token = self.call("/v3/auth/authenticate", {"name": name, "password": password})[
            "token"
        ]
