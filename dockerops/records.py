"""What dockerops remembers on a host, beyond container labels.

One small JSON file per service under ``/var/lib/dockerops/services`` (minion
option ``dockerops.state_dir``), written atomically. Today it records which
config version each live-mounted replica has loaded (labels cannot change after
a container is created, but a ``signal`` reload moves a replica to a new
version).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = "/var/lib/dockerops"


def state_dir(opts: Any) -> str:
    return str(opts.get("dockerops.state_dir") or DEFAULT_STATE_DIR)


class ServiceRecord:
    def __init__(self, base: str | Path, service: str) -> None:
        self.path = Path(base) / "services" / f"{service}.json"

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def config_seen(self) -> dict[str, str]:
        seen = self.load().get("config_seen")
        if not isinstance(seen, dict):
            return {}
        return {str(k): str(v) for k, v in seen.items()}

    def set_config_seen(self, seen: dict[str, str]) -> None:
        data = self.load()
        if data.get("config_seen") == seen:
            return
        data["config_seen"] = seen
        self.save(data)
