"""The Docker adapter: the few daemon operations dockerops needs.

All calls go through :func:`dockerops.client.translate_errors`, with a message
naming the service and replica concerned.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import docker
import requests.exceptions
from docker.types import LogConfig

from . import safepath
from .client import docker_client, kept_reads, translate_errors
from .errors import DockerError, NotFound
from .health import POLL, Clock, HealthReport, HealthWatch
from .inputs import NamedVolume
from .registry import parse_reference, settings_for
from .replicas import (
    LABEL_MANAGED,
    LABEL_SERVICE,
    ActualReplica,
    DesiredReplica,
    actual_from_list_entry,
)
from .spec import PILLAR_KEY, RegistrySettings, check_service_name, load_root

# Containers stopped at once by remove_all (each stop mostly waits).
REMOVE_WORKERS = 16

# Docker's grace period for a container created without a stop timeout.
STOP_TIMEOUT = 10
# Exit code of a process killed by SIGKILL (128 + 9).
KILLED_EXIT_CODE = 137
# Failure reports quote a container's last log lines, this many at most.
LOG_LINES = 20
LOG_BYTES = 4096
# Marks a config check's throwaway container (never a replica: no service label).
LABEL_CHECK = "io.dockerops.check"
# How long a read kept for the rest of a call (the host's container list, an
# image inspect) may be served: a long state run (other states between ours)
# reads again rather than judge from an old list.
READ_MAX_AGE = 5.0


class DockerHost:
    """One Docker daemon, seen through dockerops' labels."""

    def __init__(
        self,
        client: docker.DockerClient,
        reads: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.api = client.api
        # dockerops:registries: credentials for pulls, by registry host[:port].
        self.registries: Mapping[str, RegistrySettings] = {}
        # Where reads are kept for the rest of a call (dockerops.client.kept_reads
        # of Salt's __context__), or None: every read asks the daemon. Any write
        # through a client of the same context drops them.
        self.reads = reads
        self.clock = clock

    def _kept(self, what: str, key: str, read: Callable[[], Any]) -> Any:
        """``read()``, or what it returned less than :data:`READ_MAX_AGE` ago
        in this call with no write since."""
        if self.reads is None:
            return read()
        now = self.clock()
        found = self.reads.get(what, {}).get(key)
        if found is not None and 0 <= now - found[0] < READ_MAX_AGE:
            return found[1]
        # A write while reading (another thread) empties the reads and drops
        # this token: what was read then is not kept.
        token = self.reads.setdefault("token", object())
        value = read()
        if self.reads.get("token") is token:
            self.reads.setdefault(what, {})[key] = (now, value)
        return value

    def auth_config(self, ref: str) -> dict[str, str] | None:
        """The credentials pillar gives for ``ref``'s registry, as docker-py takes them.

        The registry is found as Docker finds it (``org/app`` is Docker Hub,
        keyed under any of its names), as the config image builder does.
        """
        settings = settings_for(parse_reference(ref).registry, self.registries)
        if settings is None or settings.username is None or settings.password is None:
            return None
        return {"username": settings.username, "password": settings.password}

    def managed(self, service: str | None = None, kept: bool = False) -> list[ActualReplica]:
        """Every dockerops container (or one service's), from a single list call.

        ``kept``: the host's dockerops containers may come from a list call made
        earlier in this call (a state run lists them once for all its services;
        see :meth:`_kept`). Only a first look, deciding whether anything is to
        be done, takes it: whatever runs under a service's lock lists afresh.
        """
        if kept and self.reads is not None:
            entries = self._kept("containers", "", self._list_managed)
            if service is not None:
                check_service_name(service)
                entries = [
                    e for e in entries if (e.get("Labels") or {}).get(LABEL_SERVICE) == service
                ]
            return [actual_from_list_entry(entry) for entry in entries]
        if service is None:
            label = f"{LABEL_MANAGED}=true"
        else:  # never "" (that would list every service's containers)
            label = f"{LABEL_SERVICE}={check_service_name(service)}"
        with translate_errors("listing containers"):
            entries = self.api.containers(all=True, filters={"label": label})
        return [actual_from_list_entry(entry) for entry in entries]

    def _list_managed(self) -> list[dict[str, Any]]:
        with translate_errors("listing containers"):
            entries: list[dict[str, Any]] = self.api.containers(
                all=True, filters={"label": f"{LABEL_MANAGED}=true"}
            )
        return entries

    def inspect(self, container_id: str) -> dict[str, Any]:
        with translate_errors(f"inspecting container {container_id[:12]}"):
            result: dict[str, Any] = self.api.inspect_container(container_id)
        return result

    def inspect_image(self, ref: str) -> dict[str, Any]:
        """The image's inspect; kept for the rest of the call (:meth:`_kept`):
        a pull, or any other write, drops it."""

        def read() -> dict[str, Any]:
            with translate_errors(f"inspecting image {ref}"):
                result: dict[str, Any] = self.api.inspect_image(ref)
            return result

        details: dict[str, Any] = self._kept("images", ref, read)
        return details

    def ensure_image(self, ref: str, doing: str) -> None:
        """Pull ``ref`` unless the daemon already has it."""
        try:
            self.inspect_image(ref)
            return
        except NotFound:
            pass
        except DockerError as err:
            raise type(err)(f"{doing}: {err}") from err
        repository, _, tag = ref.rpartition(":")
        with translate_errors(f"{doing}: pulling image {ref}"):
            self.api.pull(repository, tag=tag, auth_config=self.auth_config(ref))

    def create(self, replica: DesiredReplica) -> str:
        """Create and start ``replica``'s container; return its id.

        Every input applies itself to the create call
        (:meth:`DesiredReplica.create_call`); here only what needs the
        daemon: the image pulled when missing, bind sources checked for
        symlinks, the networks created when missing and joined.
        """
        doing = f"service {replica.service} replica {replica.index} ({replica.name})"
        self.ensure_image(replica.image, doing)
        call = replica.create_call()
        for mount in call.mounts:
            if mount.volume is not None:
                # Docker would make a missing one itself, without its driver_opts.
                self.ensure_volume(mount.volume, doing)
            else:
                _check_bind(mount.trusted_root, mount.host, mount.read_only, f"creating {doing}")
        joins = [(n.name, list(n.aliases)) for n in call.networks]
        for network, _aliases in joins:
            self.ensure_network(network, doing)
        host_config = self.api.create_host_config(**call.host)
        with translate_errors(f"creating {doing}"):
            created = self.api.create_container(
                image=replica.image,
                name=replica.name,
                labels=replica.docker_labels(),
                host_config=host_config,
                networking_config=self._first_network(joins),
                detach=True,
                **call.container,
            )
        container_id = str(created["Id"])
        self._start_joined(container_id, replica.name, joins[1:], doing)
        return container_id

    def _first_network(self, joins: list[tuple[str, list[str]]]) -> dict[str, Any] | None:
        """The create call's networking config: the first network (Docker's
        API before 1.44 takes one), with its aliases."""
        if not joins:
            return None
        network, aliases = joins[0]
        config: dict[str, Any] = self.api.create_networking_config(
            {network: self.api.create_endpoint_config(aliases=aliases or None)}
        )
        return config

    def _start_joined(
        self, container_id: str, name: str, joins: list[tuple[str, list[str]]], doing: str
    ) -> None:
        """Join the remaining networks, then start; a container that cannot
        (port taken, network gone...) is not left behind."""
        try:
            for network, aliases in joins:
                with translate_errors(f"connecting {doing} to network {network}"):
                    self.api.connect_container_to_network(
                        container_id, network, aliases=aliases or None
                    )
            with translate_errors(f"starting {doing}"):
                self.api.start(container_id)
        except Exception:
            self.remove(container_id, name)
            raise

    def ensure_network(self, name: str, doing: str) -> None:
        """Create the user-defined bridge network ``name`` unless it exists.

        dockerops never removes a network: one may be shared with containers
        it does not manage, and Docker refuses to remove one in use anyway.
        """
        with translate_errors(f"{doing}: listing networks"):
            found = self.api.networks(names=[name])
        if any(n.get("Name") == name for n in found):
            return
        try:
            with translate_errors(f"{doing}: creating network {name}"):
                self.api.create_network(
                    name,
                    driver="bridge",
                    check_duplicate=True,
                    labels={LABEL_MANAGED: "true"},
                )
        except DockerError:
            # Created meanwhile by a concurrent run: fine if it is there now.
            with translate_errors(f"{doing}: listing networks"):
                found = self.api.networks(names=[name])
            if not any(n.get("Name") == name for n in found):
                raise

    def ensure_volume(self, volume: NamedVolume, doing: str) -> bool:
        """Make the volume unless it exists; True when it was made.

        One that exists must have the driver and options pillar gives it: it
        is an error otherwise, and the volume is left as it is (it holds data:
        dockerops never removes or re-creates a volume). A local bind volume's
        directory is made and checked like a bind's host path.
        """
        if volume.device is not None:
            assert volume.device_root is not None
            _check_bind(volume.device_root, volume.device, False, f"{doing}: volume {volume.name}")
        wanted = dict(volume.options)
        try:
            with translate_errors(f"{doing}: inspecting volume {volume.name}"):
                found: dict[str, Any] = self.api.inspect_volume(volume.name)
        except NotFound:
            try:
                with translate_errors(f"{doing}: creating volume {volume.name}"):
                    self.api.create_volume(
                        volume.name,
                        driver=volume.driver,
                        driver_opts=wanted or None,
                        labels={LABEL_MANAGED: "true"},
                    )
                return True
            except DockerError:
                # Made meanwhile by a concurrent run: compared below.
                with translate_errors(f"{doing}: inspecting volume {volume.name}"):
                    found = self.api.inspect_volume(volume.name)
        has = (str(found.get("Driver") or ""), dict(found.get("Options") or {}))
        if has != (volume.driver, wanted):
            raise DockerError(
                f"{doing}: volume {volume.name} exists with driver {has[0]} and options "
                f"{show_volume_options(has[1])}, but pillar says driver {volume.driver} and "
                f"options {show_volume_options(wanted)}; dockerops never removes or re-creates "
                "a volume (it holds data): move the data and remove the volume yourself, or "
                "name another volume"
            )
        return False

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
                if not source.startswith("/"):
                    continue  # a named volume: not a host path (and never removed)
                try:
                    root = trusted_root(source)
                except ValueError as err:
                    raise safepath.UnsafePath(f"re-creating {name}: {err}") from None
                read_only = "ro" in rest.split(":")[-1].split(",")
                _check_bind(root, source, read_only, f"re-creating {name}")
        # The whole container config, so an input added to dockerops.inputs
        # later is put back too; only a hostname Docker derived from the old
        # container's id is left for Docker to derive again.
        body = {key: value for key, value in config.items() if value is not None}
        if body.get("Hostname") == str(details.get("Id", ""))[:12]:
            body.pop("Hostname")
        body["HostConfig"] = host_config
        joins = _joined_networks(details)
        first = self._first_network(joins)
        if first is not None:
            body["NetworkingConfig"] = first
        with translate_errors(f"re-creating {name}"):
            created = self.api.create_container_from_config(body, name=name)
        container_id = str(created["Id"])
        self._start_joined(container_id, name, joins[1:], f"re-creating {name}")
        return container_id

    def restart(self, container_id: str, name: str) -> None:
        """Restart a container, waiting its own grace period (see :func:`stop_grace`)."""
        grace = stop_grace(self.inspect(container_id))
        with translate_errors(f"restarting {name}"):
            self.api.restart(container_id, timeout=grace)

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

    def remove(
        self,
        container_id: str,
        name: str,
        graceful: bool = True,
        details: dict[str, Any] | None = None,
    ) -> StopReport | None:
        """Stop (gracefully, unless told not to) and remove a container; how it stopped.

        A container that is gone already is fine (None). ``graceful=False`` is
        for failed replacements: a crash-looping container is not waited for
        (None). See :meth:`stop` for ``details``.
        """
        try:
            stopped = self.stop(container_id, name, details) if graceful else None
            with translate_errors(f"removing {name}"):
                self.api.remove_container(container_id, force=True)
        except NotFound:
            return None
        return stopped

    def stop(
        self, container_id: str, name: str, details: dict[str, Any] | None = None
    ) -> StopReport:
        """Stop a container within its own grace period, and say whether it had to be killed.

        The grace period is the container's ``StopTimeout`` (:func:`stop_grace`),
        read from ``details`` (an inspect the caller has) or a fresh inspect.
        docker-py adds it to the HTTP timeout of the stop request. A stop that
        took the whole grace period and left exit code 137 was a SIGKILL after
        the stop signal went unheeded (a shell or server as PID 1 ignoring
        SIGTERM): the operator should set ``init`` or ``stop_signal``.
        """
        grace = stop_grace(details if details is not None else self.inspect(container_id))
        started = time.monotonic()
        with translate_errors(f"stopping {name}"):
            self.api.stop(container_id, timeout=grace)
        took = time.monotonic() - started
        with translate_errors(f"inspecting {name} after its stop"):
            state = self.api.inspect_container(container_id).get("State") or {}
        killed = took >= grace and state.get("ExitCode") == KILLED_EXIT_CODE
        return StopReport(name, round(took, 2), grace, killed)


def stop_grace(details: dict[str, Any]) -> int:
    """A container's grace period: its ``Config.StopTimeout``, else Docker's 10 s."""
    value = (details.get("Config") or {}).get("StopTimeout")
    return value if isinstance(value, int) and value >= 0 else STOP_TIMEOUT


@dataclass(frozen=True)
class StopReport:
    """How one container stopped: seconds taken, its grace period, killed after it?"""

    container: str
    seconds: float
    grace: int
    killed: bool

    @property
    def hint(self) -> str | None:
        """What the operator should do about a stop that needed a kill."""
        if not self.killed:
            return None
        return (
            f"needed a kill after its {self.grace}s grace period: its PID 1 ignores the "
            "stop signal; set init: true or stop_signal"
        )


def remove_all(
    host: DockerHost, containers: list[tuple[str, str]]
) -> list[StopReport | DockerError | None]:
    """Stop and remove ``(id, name)`` containers all at once; per container,
    how it stopped (:meth:`DockerHost.remove`) or the error it met.

    Each stop waits its own grace period, so removing N replicas whose PID 1
    ignores SIGTERM costs one grace period, not N.
    """

    def remove(container: tuple[str, str]) -> StopReport | DockerError | None:
        try:
            return host.remove(*container)
        except DockerError as err:
            return err

    if len(containers) <= 1:
        return [remove(c) for c in containers]
    with ThreadPoolExecutor(max_workers=min(len(containers), REMOVE_WORKERS)) as pool:
        return list(pool.map(remove, containers))


# Inspects at once (status, metrics): dockerd answers them in parallel; the
# docker-py client keeps 10 connections per pool.
INSPECT_WORKERS = 8


def inspect_all(host: DockerHost, container_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """``docker inspect`` of each container, several at once; None for one
    removed since it was listed (a rollout retiring it meanwhile)."""

    def inspect(container_id: str) -> dict[str, Any] | None:
        try:
            return host.inspect(container_id)
        except NotFound:
            return None

    if len(container_ids) <= 1:
        return {cid: inspect(cid) for cid in container_ids}
    with ThreadPoolExecutor(max_workers=min(len(container_ids), INSPECT_WORKERS)) as pool:
        return dict(zip(container_ids, pool.map(inspect, container_ids), strict=True))


def _joined_networks(details: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The user-defined networks an inspected container joined, the one it
    was created on first, each with the aliases it was given there (not the
    container id Docker adds)."""
    networks = (details.get("NetworkSettings") or {}).get("Networks") or {}
    mode = str((details.get("HostConfig") or {}).get("NetworkMode") or "")
    if mode not in networks:  # the default bridge, host, none...
        return []
    short_id = str(details.get("Id") or "")[:12]
    order = [mode, *sorted(n for n in networks if n != mode)]
    return [
        (n, [a for a in (networks[n] or {}).get("Aliases") or [] if a != short_id]) for n in order
    ]


def _labels(entry: Mapping[str, Any]) -> Mapping[str, str]:
    labels: Mapping[str, str] = entry.get("Labels") or {}
    return labels


def show_volume_options(options: dict[str, str]) -> str:
    """A volume's options for a message: a credential in ``o`` (cifs) is hidden."""
    shown = {}
    for key, value in sorted(options.items()):
        parts = []
        for part in value.split(","):
            name, equals, _secret = part.partition("=")
            hidden = equals and any(word in name.lower() for word in ("pass", "cred", "secret"))
            parts.append(f"{name}=***" if hidden else part)
        shown[key] = ",".join(parts)
    return str(shown or "{}")


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


def minion_host(
    opts: Any, context: MutableMapping[str, Any], pillar: Mapping[str, Any] | None = None
) -> DockerHost:
    """The Docker host this minion manages (``dockerops.docker_url``), with
    ``pillar``'s registry credentials (``dockerops:registries``) for pulls.

    Its client is cached in ``context``; the caller closes it when its call
    ends (:func:`dockerops.client.close_clients`).
    """
    host = DockerHost(docker_client(opts, context), reads=kept_reads(context))
    raw = (pillar or {}).get(PILLAR_KEY)
    if isinstance(raw, Mapping) and raw.get("registries"):
        host.registries = load_root(pillar or {}).registries
    return host
