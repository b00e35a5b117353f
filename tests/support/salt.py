"""Masterless Salt for tests: a minion config dir and a salt-call runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SALT_CALL = str(Path(sys.executable).parent / "salt-call")


@dataclass
class CallResult:
    returncode: int
    data: Any
    stdout: str
    stderr: str


class Masterless:
    """``salt-call --local`` against the repo's file_roots and a test pillar."""

    def __init__(self, root: Path, minion_id: str, docker_url: str, **extra: Any) -> None:
        self.root = root
        self.pillar_dir = root / "pillar"
        self.pillar_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "id": minion_id,
            "file_client": "local",
            "root_dir": str(root / "root"),
            "file_roots": {"base": [str(REPO / "salt")]},
            "pillar_roots": {"base": [str(self.pillar_dir)]},
            "dockerops.docker_url": docker_url,
            # Never the host's node_exporter directory: this one does not exist.
            "dockerops.metrics_file": str(root / "metrics" / "dockerops.prom"),
            "log_level_logfile": "info",
            **extra,
        }
        (root / "minion").write_text(yaml.safe_dump(config))
        self.set_pillar({})

    def set_pillar(self, pillar: dict[str, Any]) -> None:
        (self.pillar_dir / "top.sls").write_text("base:\n  '*':\n    - test\n")
        (self.pillar_dir / "test.sls").write_text("#!yaml\n" + yaml.safe_dump(pillar))

    def run(self, *args: str, env: dict[str, str] | None = None) -> CallResult:
        proc = subprocess.run(
            [
                SALT_CALL,
                "-c",
                str(self.root),
                "--local",
                "--out=json",
                "--retcode-passthrough",
                *args,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=300,
            check=False,
        )
        try:
            data = json.loads(proc.stdout)["local"] if proc.stdout.strip() else None
        except (ValueError, KeyError, TypeError):
            data = None
        return CallResult(proc.returncode, data, proc.stdout, proc.stderr)
