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


def test_a_failed_reload_keeps_its_cause_when_the_daemon_goes_away(tmp_path: Any) -> None:
    """The replica exits after the signal, then dockerd is gone while the config
    is put back: the failure still names the cause and quotes the log."""
    import itertools
    from types import SimpleNamespace

    from dockerops.config import ConfigStore, RenderedConfig, RenderedFile, version_of
    from dockerops.configcheck import reload_replicas
    from dockerops.errors import DockerUnavailable
    from dockerops.health import Clock
    from dockerops.plan import Action

    allowed = str(tmp_path)
    spec = load_service(
        {
            "dockerops": {
                "allowed_host_paths": [allowed],
                "services": {
                    "web": {
                        "image": "web",
                        "config": {
                            "path": "/etc/app",
                            "root": f"{allowed}/web/config",
                            "on_change": "signal:SIGHUP",
                            "files": {"a": {"contents": "x"}},
                        },
                    }
                },
            }
        },
        "web",
    )

    def rendered(text: bytes) -> RenderedConfig:
        files = [RenderedFile("a", text, 0o644)]
        return RenderedConfig(tuple(files), version_of(files))

    store = ConfigStore.of(spec)
    old, new = rendered(b"old"), rendered(b"new")
    store.write(old)
    store.write(new)
    store.activate(new.version)

    class Host:
        inspects = 0

        def inspect(self, container_id: str) -> dict[str, Any]:
            self.inspects += 1  # the baseline before the signal, then the watch
            if self.inspects == 1:
                return {"State": {"Status": "running"}, "RestartCount": 0}
            if self.inspects == 2:
                return {"State": {"Status": "exited", "ExitCode": 1}, "RestartCount": 0}
            raise DockerUnavailable("inspecting web-1: Docker daemon unreachable")

        def signal(self, *args: Any) -> None:
            return None

        def log_tail(self, *args: Any, **kwargs: Any) -> str:
            return "nginx: [emerg] unknown directive"

    ticks = itertools.count()
    action = Action(
        "signal",
        "web-1",
        1,
        cast(Any, SimpleNamespace(config_version=new.version)),
        cast(Any, SimpleNamespace(id="c1")),
        signal="SIGHUP",
        seen_version=old.version,
    )
    report = reload_replicas(
        cast(DockerHost, Host()),
        spec,
        [action],
        0.0,
        lambda *_: None,
        [],
        Clock(now=lambda: float(next(ticks)), sleep=lambda _s: None),
    )
    assert report.failure is not None
    assert "web-1 exited with code 1" in report.failure
    assert "unknown directive" in report.failure
    assert any("could not put the config back" in step for step in report.steps)
