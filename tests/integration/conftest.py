"""Integration tier: a real salt-master and salt-minions (pytest-salt-factories),
each minion managing its own isolated Docker host.

The master serves the repository as its file_roots, exactly as an operator
would deploy dockerops: minions get the modules and the library with
``saltutil.sync_all``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.dockerd import ExtraDaemon, start_extra_daemons

REPO = Path(__file__).resolve().parents[2]

# Minion ids pick the environment in pillar/top.sls style: int-*, stg-*.
# A fleet of three minions, each on its own Docker host. The environment tests
# use the first two (ENV_TGT matches them and not prd-m3).
ENV_MINIONS = ("int-m1", "stg-m2")
ENV_TGT = "[is]*"
MINIONS = (*ENV_MINIONS, "prd-m3")
ENV_GLOBS = {"integration": "int-*", "staging": "stg-*", "production": "prd-*"}


@pytest.fixture(scope="session")
def docker_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ExtraDaemon]]:
    """One isolated dockerd per minion."""
    daemons = start_extra_daemons(len(MINIONS), tmp_path_factory.mktemp("hosts"))
    yield dict(zip(MINIONS, daemons, strict=True))
    for daemon in daemons:
        daemon.stop()


@pytest.fixture(scope="session")
def pillar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pillar")


def _clear(pillar_dir: Path) -> None:
    for path in pillar_dir.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def write_pillar(pillar_dir: Path, per_env: dict[str, dict[str, Any]]) -> None:
    """A pillar top.sls assigning environments by minion id, and one file each."""
    _clear(pillar_dir)
    top = {"base": {ENV_GLOBS[env]: [env] for env in per_env}}
    (pillar_dir / "top.sls").write_text(yaml.safe_dump(top))
    for env, data in per_env.items():
        (pillar_dir / f"{env}.sls").write_text(yaml.safe_dump(data))


def use_repo_pillar(pillar_dir: Path, overrides: dict[str, dict[str, Any]]) -> None:
    """The repository's own pillar/, plus per-environment test overrides merged last.

    The overrides only adapt the example to this machine (image from the test
    registry, free host ports, config roots in a temp dir): everything else is
    the example environments as shipped.
    """
    _clear(pillar_dir)
    shutil.copytree(REPO / "pillar", pillar_dir, dirs_exist_ok=True)
    top = (pillar_dir / "top.sls").read_text()
    for env, data in overrides.items():
        name = f"test_override_{env}"
        (pillar_dir / f"{name}.sls").write_text("#!yaml\n" + yaml.safe_dump(data))
        # Listed after the environment files, so merged over them.
        top += f"  '{ENV_GLOBS[env].replace('-*', '-m*')}':\n    - {name}\n"
    (pillar_dir / "top.sls").write_text(top)


@pytest.fixture(scope="session")
def salt_master(salt_factories, pillar_dir: Path):
    write_pillar(pillar_dir, {})
    master = salt_factories.salt_master_daemon(
        "dockerops-master",
        overrides={
            "file_roots": {"base": [str(REPO / "salt")]},
            "pillar_roots": {"base": [str(pillar_dir)]},
            "log_level_logfile": "info",
            # README's reactor set-up: the example reacts to the beacon's
            # crash loops and give-ups (only the beacon test turns a beacon on).
            "reactor": [
                {f"salt/beacon/*/dockerops/*/{event}": ["salt://reactor/dockerops.sls"]}
                for event in ("crash_loop", "gave_up")
            ],
        },
    )
    with master.started(start_timeout=120):
        yield master


@pytest.fixture(scope="session")
def salt_minions(salt_master, docker_hosts: dict[str, ExtraDaemon]):
    minions = [
        salt_master.salt_minion_daemon(
            minion_id,
            overrides={
                "dockerops.docker_url": docker_hosts[minion_id].url,
                # Minions share this machine's disk: each gets its own records.
                "dockerops.state_dir": str(docker_hosts[minion_id].base / "state"),
                # Never the host's node_exporter directory: this one does not exist.
                "dockerops.metrics_file": str(docker_hosts[minion_id].base / "no" / "m.prom"),
            },
        )
        for minion_id in MINIONS
    ]
    started = []
    try:
        for minion in minions:
            minion.start(start_timeout=120)
            started.append(minion)
        salt_cli = salt_master.salt_cli(timeout=180)
        synced = salt_cli.run("saltutil.sync_all", minion_tgt="*")
        assert synced.returncode == 0, synced.stderr
        # The runner and the library it needs, on the master (salt://_runners, _utils).
        master_sync = salt_master.salt_run_cli(timeout=180).run("saltutil.sync_all")
        assert master_sync.returncode == 0, master_sync.stderr
        yield {m.id: m for m in minions}
    finally:
        for minion in started:
            minion.terminate()


@pytest.fixture(scope="session")
def salt_cli(salt_master, salt_minions):
    return salt_master.salt_cli(timeout=300)
