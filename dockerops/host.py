"""The Docker adapter: the few daemon operations dockerops needs.

All calls go through :func:`dockerops.client.translate_errors`, with a message
naming the service and replica concerned.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import docker
import requests.exceptions
from docker.types import LogConfig

from . import safepath
from .client import docker_client, translate_errors
from .errors import DockerError, NotFound
from .replicas import (
    LABEL_MANAGED,
    LABEL_SERVICE,
    ActualReplica,
    DesiredReplica,
    actual_from_list_entry,
)
from .spec import check_service_name

STOP_TIMEOUT = 10
# Failure reports quote a container's last log lines, this many at most.
LOG_LINES = 20
LOG_BYTES = 4096
# Marks a config check's throwaway container (never a replica: no service label).
LABEL_CHECK = "io.dockerops.check"
# Seconds between inspects while waiting on a container's health.
POLL = 0.1


@dataclass
class Clock:
    """Time for the health waits and the rollout loop (a fake one in tests)."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


class DockerHost:
    """One Docker daemon, seen through dockerops' labels."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.api = client.api

    def managed(self, service: str | None = None) -> list[ActualReplica]:
        """Every dockerops container (or one service's), from a single list call."""
        if service is None:
            label = f"{LABEL_MANAGED}=true"
        else:  # never "" (that would list every service's containers)
            label = f"{LABEL_SERVICE}={check_service_name(service)}"
        with translate_errors("listing containers"):
            entries = self.api.containers(all=True, filters={"label": label})
        return [actual_from_list_entry(entry) for entry in entries]

    def inspect(self, container_id: str) -> dict[str, Any]:
        with translate_errors(f"inspecting container {container_id[:12]}"):
            result: dict[str, Any] = self.api.inspect_container(container_id)
        return result

    def inspect_image(self, ref: str) -> dict[str, Any]:
        with translate_errors(f"inspecting image {ref}"):
            result: dict[str, Any] = self.api.inspect_image(ref)
        return result

    def ensure_image(self, ref: str, doing: str) -> None:
        """Pull ``ref`` unless the daemon already has it."""
        try:
            with translate_errors(doing):
                self.api.inspect_image(ref)
            return
        except NotFound:
            pass
        repository, _, tag = ref.rpartition(":")
        with translate_errors(f"{doing}: pulling image {ref}"):
            self.api.pull(repository, tag=tag)

    def create(self, replica: DesiredReplica) -> str:
        """Create and start ``replica``'s container; return its id."""
        doing = f"service {replica.service} replica {replica.index} ({replica.name})"
        self.ensure_image(replica.image, doing)
        port_bindings: dict[str, list[tuple[str, int] | tuple[str]]] = {}
        for port in replica.ports:
            binding = (port.host_ip, port.host_port) if port.host_port else (port.host_ip,)
            port_bindings.setdefault(port.key, []).append(binding)
        name, _, count = replica.restart_policy.partition(":")
        for mount in replica.mounts:
            _check_bind(mount.trusted_root, mount.host, mount.read_only, f"creating {doing}")
        host_config = self.api.create_host_config(
            port_bindings=port_bindings or None,
            restart_policy={"Name": name, "MaximumRetryCount": int(count or 0)},
            binds=[
                f"{m.host}:{m.container}:{'ro' if m.read_only else 'rw'}" for m in replica.mounts
            ]
            or None,
            log_config=LogConfig(type=replica.log_driver, config=dict(replica.log_options)),
        )
        with translate_errors(f"creating {doing}"):
            created = self.api.create_container(
                image=replica.image,
                name=replica.name,
                command=list(replica.command) if replica.command is not None else None,
                environment=dict(replica.env),
                ports=[(p.container, p.protocol) for p in replica.ports] or None,
                labels=replica.docker_labels(),
                host_config=host_config,
                healthcheck=replica.docker_healthcheck(),
                detach=True,
            )
        container_id = str(created["Id"])
        try:
            with translate_errors(f"starting {doing}"):
                self.api.start(container_id)
        except Exception:
            # A container that cannot start (port taken, ...) is not left behind.
            self.remove(container_id, replica.name)
            raise
        return container_id

    def recreate_from(
        self, details: dict[str, Any], trusted_root: Callable[[str], str] | None = None
    ) -> str:
        """Create and start a container again from an earlier ``inspect``.

        Used to put back a replica exactly as it was (rollback): same image,
        command, env, labels, mounts, ports, restart policy, logging and
        healthcheck. ``trusted_root(host_path)`` names the allow-list root of
        each bind's host path (:meth:`ServiceSpec.trusted_root`): every bind is
        checked as :meth:`create` checks them, since a container may have
        planted a symlink since the inspect was taken.
        """
        config = details["Config"]
        name = str(details["Name"]).lstrip("/")
        host_config = dict(details["HostConfig"])
        if trusted_root is not None:
            for bind in host_config.get("Binds") or []:
                source, _, rest = str(bind).partition(":")
                try:
                    root = trusted_root(source)
                except ValueError as err:
                    raise safepath.UnsafePath(f"re-creating {name}: {err}") from None
                read_only = "ro" in rest.split(":")[-1].split(",")
                _check_bind(root, source, read_only, f"re-creating {name}")
        body = {
            "Image": config["Image"],
            "Cmd": config.get("Cmd"),
            "Entrypoint": config.get("Entrypoint"),
            "Env": config.get("Env"),
            "Labels": config.get("Labels"),
            "ExposedPorts": config.get("ExposedPorts"),
            "Healthcheck": config.get("Healthcheck"),
            "WorkingDir": config.get("WorkingDir"),
            "User": config.get("User"),
            "StopSignal": config.get("StopSignal"),
            "HostConfig": host_config,
        }
        with translate_errors(f"re-creating {name}"):
            created = self.api.create_container_from_config(body, name=name)
        container_id = str(created["Id"])
        try:
            with translate_errors(f"starting {name}"):
                self.api.start(container_id)
        except Exception:
            self.remove(container_id, name)
            raise
        return container_id

    def restart(self, container_id: str, name: str) -> None:
        with translate_errors(f"restarting {name}"):
            self.api.restart(container_id, timeout=STOP_TIMEOUT)

    def signal(self, container_id: str, name: str, signal: str) -> None:
        with translate_errors(f"sending {signal} to {name}"):
            self.api.kill(container_id, signal=signal)

    def wait_healthy(
        self,
        container_id: str,
        name: str,
        timeout: float,
        min_healthy_time: float = 0.0,
        poll: float = POLL,
        restarts: int | None = None,
        clock: Clock | None = None,
    ) -> HealthReport:
        """Wait until the container counts as healthy, or say why it does not.

        See :class:`HealthWatch` for what counts. ``restarts`` is the restart
        count it starts from (0 for a container just created; None: whatever
        the first inspect shows).
        """
        clock = clock or Clock()
        watch = HealthWatch(name, timeout, min_healthy_time, clock.now(), restarts)
        while True:
            verdict = watch.observe(self.inspect(container_id), clock.now())
            if verdict is not None:
                return verdict
            clock.sleep(poll)

    def log_tail(
        self, container_id: str, lines: int = LOG_LINES, max_bytes: int = LOG_BYTES
    ) -> str:
        """A container's last ``lines`` log lines (stdout and stderr), at most
        ``max_bytes`` of them; "" when they cannot be read (gone, or a log
        driver Docker cannot read back)."""
        try:
            with translate_errors(f"reading the logs of {container_id[:12]}"):
                raw = self.api.logs(container_id, stdout=True, stderr=True, tail=lines)
        except DockerError:
            return ""
        return bounded_tail(raw, lines, max_bytes)

    def run_check(
        self,
        image: str,
        command: list[str],
        mounts: list[tuple[str, str]],
        env: dict[str, str],
        timeout: float,
        label: str,
    ) -> CheckRun:
        """Run ``command`` once in a throwaway container of ``image``; its exit and output.

        ``mounts`` (host, container) are read-only; no network, no published
        port, no restart policy, no healthcheck; stopped after ``timeout``
        seconds and removed whatever happens. ``label`` names what is checked
        (``io.dockerops.check``); the container carries no service label, so it
        is never taken for a replica.
        """
        name = f"dockerops-check-{label}-{secrets.token_hex(4)}"
        host_config = self.api.create_host_config(
            binds=[f"{source}:{target}:ro" for source, target in mounts] or None,
            network_mode="none",
            restart_policy={"Name": "no"},
            log_config=LogConfig(type="json-file", config={"max-size": "1m"}),
        )
        started = time.monotonic()
        with translate_errors(f"creating the config check container for {label}"):
            created = self.api.create_container(
                image=image,
                name=name,
                command=command,
                environment=env,
                labels={LABEL_CHECK: label},
                host_config=host_config,
                healthcheck={"test": ["NONE"]},
                detach=True,
            )
        container_id = str(created["Id"])
        try:
            with translate_errors(f"starting the config check container for {label}"):
                self.api.start(container_id)
            exit_code: int | None
            with translate_errors(f"waiting for the config check of {label}"):
                try:
                    waited = self.api.wait(container_id, timeout=max(timeout, 1.0))
                    exit_code = int(waited.get("StatusCode", -1))
                except requests.exceptions.ReadTimeout:
                    exit_code = None  # still running after the timeout
            output = self.log_tail(container_id)
        finally:
            self.remove(container_id, name, graceful=False)
        return CheckRun(exit_code, output, time.monotonic() - started)

    def start(self, container_id: str, name: str) -> None:
        with translate_errors(f"starting {name}"):
            self.api.start(container_id)

    def remove(self, container_id: str, name: str, graceful: bool = True) -> None:
        """Stop (gracefully, unless told not to) and remove a container.

        A container that is gone already is fine. ``graceful=False`` is for
        failed replacements: a crash-looping container is not waited for.
        """
        try:
            if graceful:
                with translate_errors(f"stopping {name}"):
                    self.api.stop(container_id, timeout=STOP_TIMEOUT)
            with translate_errors(f"removing {name}"):
                self.api.remove_container(container_id, force=True)
        except NotFound:
            return


def _check_bind(trusted_root: str, host_path: str, read_only: bool, doing: str) -> None:
    """Refuse a bind whose host path has a symlink below its allow-list root.

    dockerd follows symlinks in a bind's host path, and a container may have
    planted one since the last run: every component below the allow-list root
    must be a real directory. Missing data directories are made by us (not by
    dockerd, following links), without following any.
    """
    try:
        if read_only:
            safepath.open_below(trusted_root, host_path).close()
        else:
            safepath.ensure_dir(trusted_root, host_path)
    except FileNotFoundError:
        # dockerd would make it, empty and root-owned: a config version pruned
        # since an inspect was taken would then be served empty for good.
        raise DockerError(
            f"{doing}: host path {host_path} does not exist (a read-only mount is never created)"
        ) from None
    except safepath.UnsafePath as err:
        raise safepath.UnsafePath(f"{doing}: {err}") from None
    except (OSError, ValueError) as err:
        raise DockerError(f"{doing}: host path {host_path}: {err}") from err


class Wakeup:
    """Sleeps like ``time.sleep``, but wakes as soon as Docker reports an event
    (a health status, a start, a die...) for one service's containers.

    The rollout loop polls with it: it notices a replacement turning healthy
    or unhealthy at once instead of up to a poll interval later, and still
    polls when no event comes. Without an events stream it just sleeps.
    """

    def __init__(self, host: DockerHost, service: str) -> None:
        self._woken = threading.Event()
        self._stream: Any = None
        try:
            self._stream = host.api.events(
                filters={"type": "container", "label": f"{LABEL_SERVICE}={service}"},
                decode=True,
            )
        except Exception:
            return
        threading.Thread(target=self._pump, name=f"dockerops-events-{service}", daemon=True).start()

    def _pump(self) -> None:
        with contextlib.suppress(Exception):  # a closed or broken stream ends it
            for _event in self._stream:
                self._woken.set()

    def sleep(self, seconds: float) -> None:
        self._woken.wait(seconds)
        self._woken.clear()

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()


@dataclass(frozen=True)
class CheckRun:
    """One run of a check command: its exit code (None: killed at the timeout)."""

    exit_code: int | None
    output: str
    seconds: float


def bounded_tail(raw: bytes | str, lines: int = LOG_LINES, max_bytes: int = LOG_BYTES) -> str:
    """The last ``lines`` lines of ``raw``, cut to its last ``max_bytes`` bytes."""
    data = raw.encode() if isinstance(raw, str) else raw
    kept = b"\n".join(data.rstrip(b"\n").split(b"\n")[-lines:])
    if len(kept) > max_bytes:
        kept = b"..." + kept[-max_bytes:]
    return kept.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class HealthReport:
    healthy: bool
    reason: str
    seconds: float


@dataclass
class HealthWatch:
    """Judges one container's successive inspects: does it count as healthy yet?

    It counts once Docker reports it ``healthy`` (the image's HEALTHCHECK or the
    spec's), or, without a healthcheck, running, and it then stays so, without
    a restart, for ``min_healthy_time`` (at least a second without a
    healthcheck, so an instant crash is not taken for success). It fails on a
    restart, an exit, ``unhealthy``, losing health, or ``timeout`` seconds
    after ``started`` without being healthy. Pure: the caller inspects and
    keeps the time.
    """

    name: str
    timeout: float
    min_healthy_time: float
    started: float
    restarts: int | None = None
    healthy_since: float | None = None

    @property
    def healthy(self) -> bool:
        """Whether Docker reports it healthy (it may still be proving itself)."""
        return self.healthy_since is not None

    def observe(self, details: dict[str, Any], now: float) -> HealthReport | None:
        """The verdict from one inspect taken at ``now``; None: undecided yet."""
        state = details.get("State") or {}
        took = now - self.started
        count = int(details.get("RestartCount") or 0)
        if self.restarts is None:
            self.restarts = count
        if count > self.restarts or state.get("Restarting"):
            return HealthReport(False, f"{self.name} restarted (crash loop)", took)
        if state.get("Status") in ("exited", "dead"):
            return HealthReport(
                False, f"{self.name} exited with code {state.get('ExitCode')}", took
            )
        has_check = _has_healthcheck(details)
        health = (state.get("Health") or {}).get("Status") if has_check else None
        if health == "unhealthy":
            return HealthReport(False, f"{self.name} became unhealthy", took)
        if state.get("Status") == "running" and (not has_check or health == "healthy"):
            if self.healthy_since is None:
                self.healthy_since = now
            settle = self.min_healthy_time if has_check else max(self.min_healthy_time, 1.0)
            if now - self.healthy_since >= settle:
                return HealthReport(True, f"{self.name} healthy", took)
            return None
        if self.healthy_since is not None:
            return HealthReport(False, f"{self.name} stopped being healthy", took)
        if took > self.timeout:
            what = f"health: {health}" if has_check else f"state: {state.get('Status')}"
            return HealthReport(
                False, f"{self.name} not healthy within {self.timeout:g}s ({what})", took
            )
        return None


def _has_healthcheck(details: dict[str, Any]) -> bool:
    test = ((details.get("Config") or {}).get("Healthcheck") or {}).get("Test") or []
    return bool(test) and test[0] != "NONE"


def minion_host(opts: Any, context: MutableMapping[str, Any]) -> DockerHost:
    """The Docker host this minion manages (``dockerops.docker_url``).

    Its client is cached in ``context``; the caller closes it when its call
    ends (:func:`dockerops.client.close_clients`).
    """
    return DockerHost(docker_client(opts, context))
