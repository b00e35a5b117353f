"""Failure logs are bounded and masked; check commands are validated."""

from __future__ import annotations

from typing import Any, cast

import pytest

from dockerops.configcheck import replica_logs
from dockerops.errors import SpecError
from dockerops.host import DockerHost, bounded_tail
from dockerops.spec import load_service


def test_bounded_tail_keeps_the_last_lines_and_bytes() -> None:
    raw = b"".join(f"line {i}\n".encode() for i in range(100))
    assert bounded_tail(raw, lines=3) == "line 97\nline 98\nline 99"
    cut = bounded_tail(b"x" * 10000, lines=20, max_bytes=4096)
    assert cut.startswith("...") and len(cut) == 4096 + 3
    assert bounded_tail(b"\xff\xfeok\n") == "\ufffd\ufffdok"


class LogHost:
    def __init__(self, text: str) -> None:
        self.text = text

    def log_tail(self, container_id: str, lines: int = 20, max_bytes: int = 4096) -> str:
        return self.text


def test_replica_logs_mask_secrets_and_say_whose_they_are() -> None:
    host = cast(DockerHost, LogHost("connecting with password hunter2-very-secret\nfailed\n"))
    text = replica_logs(host, "abc", "web-2", ["hunter2-very-secret"])
    assert text.startswith("\nlast log lines of web-2:\n  connecting")
    assert "hunter2" not in text and "failed" in text
    assert replica_logs(cast(DockerHost, LogHost("  \n")), "abc", "web-2", []) == ""


def pillar(check: Any) -> dict[str, Any]:
    config = {"path": "/etc/app", "files": {"a": {"contents": "x"}}, "check": check}
    return {"dockerops": {"services": {"web": {"image": "web", "config": config}}}}


def test_check_commands() -> None:
    spec = load_service(pillar("nginx -t"), "web")
    assert spec.config is not None
    assert spec.config.check_command == ["/bin/sh", "-c", "nginx -t"]
    spec = load_service(pillar(["nginx", "-t"]), "web")
    assert spec.config is not None and spec.config.check_command == ["nginx", "-t"]
    for bad in ("", "  ", [], ["nginx", ""], 5):
        with pytest.raises(SpecError, match="config:check"):
            load_service(pillar(bad), "web")
