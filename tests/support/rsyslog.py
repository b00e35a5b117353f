"""A private rsyslogd (Debian's rsyslog) for tests, listening on 127.0.0.1 only.

It runs with its own config, pid file and work directory under a test
directory, in the foreground (``-n``), and never reads /etc/rsyslog.conf or
touches a system rsyslog: it loads no imuxsock (/dev/log) and no imklog.
Every message it receives is written to ``messages.log`` in its directory.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
START_TIMEOUT = 20.0


def free_port(kind: int) -> int:
    """A port on 127.0.0.1 free for ``kind`` (SOCK_STREAM or SOCK_DGRAM) now."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Rsyslog:
    """``Rsyslog(directory, "tcp", extra_config=...).start()``; ``stop()`` ends it.

    ``extra_config`` is RainerScript included before the catch-all output
    (an imfile input, for example).
    """

    def __init__(self, directory: Path, protocol: str = "udp", extra_config: str = "") -> None:
        if protocol not in ("udp", "tcp"):
            raise ValueError("protocol is udp or tcp")
        self.directory = directory
        self.protocol = protocol
        self.extra_config = extra_config
        self.work = directory / "work"
        self.messages = directory / "messages.log"
        self.config = directory / "rsyslog.conf"
        self.pidfile = directory / "rsyslogd.pid"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """As Docker's syslog driver takes it: ``tcp://127.0.0.1:PORT``."""
        return f"{self.protocol}://127.0.0.1:{self.port}"

    def start(self) -> Rsyslog:
        self.work.mkdir(parents=True, exist_ok=True)
        kind = socket.SOCK_STREAM if self.protocol == "tcp" else socket.SOCK_DGRAM
        self.port = free_port(kind)
        module = "imtcp" if self.protocol == "tcp" else "imudp"
        self.config.write_text(
            f'global(workDirectory="{self.work}")\n'
            f'module(load="{module}")\n'
            f'input(type="{module}" address="127.0.0.1" port="{self.port}")\n'
            f"{self.extra_config}\n"
            f'*.* action(type="omfile" file="{self.messages}" template="RSYSLOG_FileFormat")\n'
        )
        check = subprocess.run(
            [RSYSLOGD, "-N1", "-f", str(self.config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if check.returncode != 0:
            raise RuntimeError(f"rsyslogd refuses its config: {check.stderr}")
        self.process = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.config), "-i", str(self.pidfile)],
            stdout=subprocess.DEVNULL,
            stderr=(self.directory / "rsyslogd.err").open("wb"),
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        """Until a probe sent to its input lands in the messages file."""
        probe = f"rsyslog-ready-{uuid.uuid4().hex}"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {self.errors()}")
            with contextlib.suppress(OSError):  # not listening yet
                self.send(f"<14>dockerops-test: {probe}")
            if probe in self.text():
                return
            time.sleep(0.2)
        raise RuntimeError(f"rsyslogd did not answer within {START_TIMEOUT}s: {self.errors()}")

    def send(self, message: str) -> None:
        data = message.encode() + b"\n"
        if self.protocol == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(data, ("127.0.0.1", self.port))
        else:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(data)

    def text(self) -> str:
        try:
            return self.messages.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def errors(self) -> str:
        try:
            return (self.directory / "rsyslogd.err").read_text(errors="replace")[-2000:]
        except FileNotFoundError:
            return ""

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        """The first line of the messages file holding ``text``, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.text().splitlines():
                if text in line:
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{text!r} not received by rsyslog within {timeout}s; got:\n"
                    f"{self.text()[-2000:]}\nrsyslogd: {self.errors()}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None
