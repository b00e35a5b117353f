"""A config version is proven before it counts: checked before any replica sees
it, and, for ``signal:*`` services, reloaded replica by replica with each
reload proven by health.

- :func:`ensure_checked` runs ``config.check`` (``nginx -t``...) in a throwaway
  container of the service's image with the new version mounted read-only at
  ``config.path`` (no network, no ports, no restart, removed afterwards,
  bounded by :data:`CHECK_TIMEOUT`). It runs before ``..data`` moves and
  before any replica is created, recreated or signalled; a pass is remembered
  per (image id, version) in the service record, so it runs once per version
  new to the host, never on a no-op run.
- :func:`reload_replicas` signals ``update.parallelism`` replicas at a time;
  one counts as having loaded the version only once it is still running, has
  not restarted, and stays healthy for ``min_healthy_time`` after the signal.
  Otherwise ``..data`` goes back to the version the replicas had loaded, every
  replica already signalled is signalled again, and its report says it failed.
- Publishing a version (:func:`config_change` to report it, :func:`publish`
  to write, check and activate it, :func:`prune_versions` afterwards) is
  written here once; ``config_managed`` and ``running`` both call it.
- :func:`replica_logs`: a failed replica's last log lines, for the report.

What the proof cannot see: an application that rejects a reload and keeps
serving its old config (nginx does, logging ``[emerg]``) stays running and
healthy, so its reload "passes". Only ``config.check`` catches that.
"""

from __future__ import annotations

import shlex
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .config import ConfigError, ConfigStore, RenderedConfig, redact
from .errors import DockerError
from .events import Progress
from .health import POLL, Clock, HealthWatch
from .host import DockerHost
from .ledger import Ledger
from .plan import Action
from .records import ServiceRecord
from .replicas import LABEL_CONFIG_VERSION, ActualReplica
from .spec import ServiceSpec

# Seconds a check may run before it is killed and counts as failed.
CHECK_TIMEOUT = 60.0
# Passing (image id, version) pairs remembered per service.
_CHECKED_KEY = "config_checked"
_REMEMBERED = 16


class ConfigCheckFailed(ConfigError):
    """``config.check`` rejected a config version (its output in the message)."""


def replica_logs(host: DockerHost, container_id: str, name: str, secrets: Iterable[str]) -> str:
    """``"\\nlast log lines of <name>:\\n  ..."`` (bounded, secrets masked), or ""."""
    tail = host.log_tail(container_id)
    if not tail.strip():
        return ""
    return f"\nlast log lines of {name}:\n" + textwrap.indent(redact(tail, secrets), "  ")


def ensure_checked(
    host: DockerHost,
    spec: ServiceSpec,
    store: ConfigStore,
    version: str,
    state_dir: str,
    secrets: Iterable[str] = (),
) -> str | None:
    """Run ``config.check`` on ``version`` (already written) unless it passed before.

    Returns a step for the report when a check ran and passed, None when there
    is no check or this (image, version) passed already; raises
    :class:`ConfigCheckFailed` with the command's output (bounded, ``secrets``
    masked) when it fails.
    """
    if spec.config is None or spec.config.check_command is None:
        return None
    return _check_once(
        host,
        spec,
        spec.image_ref,
        version,
        [(str(store.version_dir(version)), spec.config.path)],
        state_dir,
        secrets,
    )


def ensure_image_checked(
    host: DockerHost,
    spec: ServiceSpec,
    image_ref: str,
    version: str,
    state_dir: str,
    secrets: Iterable[str] = (),
) -> str | None:
    """Run ``config.check`` in a throwaway container of the config image
    ``image_ref`` (``config.mode: image``: the config is inside, nothing is
    mounted) unless it passed before; as :func:`ensure_checked`."""
    if spec.config is None or spec.config.check_command is None:
        return None
    return _check_once(host, spec, image_ref, version, [], state_dir, secrets)


def _check_once(
    host: DockerHost,
    spec: ServiceSpec,
    image_ref: str,
    version: str,
    mounts: list[tuple[str, str]],
    state_dir: str,
    secrets: Iterable[str],
) -> str | None:
    assert spec.config is not None and spec.config.check_command is not None
    command = spec.config.check_command
    host.ensure_image(image_ref, f"config check of service {spec.name}")
    image_id = str(host.inspect_image(image_ref).get("Id") or image_ref)
    key = f"{image_id}/{version}"
    record = ServiceRecord(state_dir, spec.name)
    passed = record.load().get(_CHECKED_KEY)
    passed = [str(k) for k in passed] if isinstance(passed, list) else []
    if key in passed:
        return None
    run = host.run_check(image_ref, command, mounts, spec.all_env, CHECK_TIMEOUT, spec.name)
    shown = spec.config.check if isinstance(spec.config.check, str) else shlex.join(command)
    if run.exit_code != 0:
        why = (
            f"did not finish within {CHECK_TIMEOUT:g}s"
            if run.exit_code is None
            else f"exited with code {run.exit_code}"
        )
        output = textwrap.indent(run.output.rstrip() or "(no output)", "  ")
        message = (
            f"config version {version} of service {spec.name} failed its check "
            f"({shown} in {image_ref}: {why}); nothing was signalled or restarted:\n{output}"
        )
        raise ConfigCheckFailed(redact(message, secrets))
    data = record.load()
    data[_CHECKED_KEY] = [*passed[-(_REMEMBERED - 1) :], key]
    record.save(data)
    return f"config version {version} passed its check ({shown}, {run.seconds:.1f}s)"


def config_change(
    store: ConfigStore,
    rendered: RenderedConfig,
    current: str | None,
    secrets: Callable[[], Iterable[str]],
) -> dict[str, Any]:
    """The ``changes`` entry publishing ``rendered`` makes (``{}``: none): the
    version, old and new, and each file's diff, ``secrets()`` masked (asked
    only when there is a change: finding them costs inspects).

    ``current`` is the version ``..data`` points at now (``store.current()``).
    """
    if current == rendered.version and store.has(rendered.version):
        return {}
    return {
        "version": {"old": current, "new": rendered.version},
        "files": store.diff(rendered, list(secrets())),
    }


def publish(
    host: DockerHost,
    spec: ServiceSpec,
    store: ConfigStore,
    rendered: RenderedConfig,
    state_dir: str,
    secrets: Iterable[str] = (),
    activate: bool = True,
    prune: bool = False,
) -> list[str]:
    """Write ``rendered``'s version, check it, then (with ``activate``) point
    ``..data`` at it, then (with ``prune``) drop unused versions; the steps
    worth reporting. The one way a version is published (``config_managed``
    and ``running`` both call it; ``running`` prunes once its replicas moved).

    A version that fails its check is left written but never activated.
    """
    steps = []
    store.write(rendered)
    checked = ensure_checked(host, spec, store, rendered.version, state_dir, secrets)
    if checked:
        steps.append(checked)
    if activate:
        store.activate(rendered.version)
    if prune:
        prune_versions(spec, store, host.managed(spec.name), Ledger(state_dir, spec.name))
    return steps


def prune_versions(
    spec: ServiceSpec,
    store: ConfigStore,
    containers: list[ActualReplica],
    ledger: Ledger,
) -> None:
    """Drop old config versions, keeping ``config.keep`` and every one in use
    (:func:`versions_in_use`); ``containers`` are the service's containers now."""
    assert spec.config is not None
    store.prune(spec.config.keep, versions_in_use(containers, ledger))


def versions_in_use(containers: list[ActualReplica], ledger: Ledger) -> set[str]:
    """Config versions pruning must keep: those containers mount, and those
    replicas an interrupted run stopped in place mount when they are put back."""
    in_use = {c.config_version for c in containers if c.config_version}
    for before in ledger.stopped_in_place().values():
        labels = (before.get("Config") or {}).get("Labels") or {}
        if labels.get(LABEL_CONFIG_VERSION):
            in_use.add(str(labels[LABEL_CONFIG_VERSION]))
    return in_use


@dataclass
class ReloadReport:
    """What signalling replicas did."""

    steps: list[str] = field(default_factory=list)
    # Signal actions whose reload is proven (and not undone).
    done: list[Action] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    # Container id -> the config version it has loaded now (None: unknown).
    loaded: dict[str, str | None] = field(default_factory=dict)
    # Replicas signalled back to the earlier version.
    reverted: list[str] = field(default_factory=list)
    # The version ..data went back to, if it did.
    back_to: str | None = None
    # Why a reload failed (with the replica's last log lines); None: all proven.
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


def reload_replicas(
    host: DockerHost,
    spec: ServiceSpec,
    actions: list[Action],
    settle: float,
    notify: Progress,
    secrets: Iterable[str] = (),
    clock: Clock | None = None,
) -> ReloadReport:
    """Send each ``signal`` action's signal, ``update.parallelism`` replicas at a time,
    each proven healthy for ``settle`` seconds afterwards (see module docstring).

    The report's ``failure`` says why one did not, after the others were put back.
    """
    assert spec.config is not None and spec.config_root is not None
    clock = clock or Clock()
    report = ReloadReport()
    timeout = spec.update.health_timeout
    size = spec.update.parallelism
    signalled: list[Action] = []
    try:
        for start in range(0, len(actions), size):
            watching: list[tuple[Action, HealthWatch]] = []
            for action in actions[start : start + size]:
                assert action.actual is not None and action.signal is not None
                # A restart after the signal is a failure: count from now.
                baseline = int(host.inspect(action.actual.id).get("RestartCount") or 0)
                host.signal(action.actual.id, action.name, action.signal)
                signalled.append(action)
                report.touched.add(action.actual.id)
                watch = HealthWatch(action.name, timeout, settle, clock.now(), restarts=baseline)
                watching.append((action, watch))
            while watching:
                for action, watch in list(watching):
                    assert action.actual is not None and action.desired is not None
                    verdict = watch.observe(host.inspect(action.actual.id), clock.now())
                    if verdict is None:
                        continue
                    if not verdict.healthy:
                        raise _Failed(verdict.reason, action)
                    watching.remove((action, watch))
                    report.loaded[action.actual.id] = action.desired.config_version
                    report.done.append(action)
                    report.steps.append(
                        f"sent {action.signal} to {action.name} (healthy {settle:g}s after)"
                    )
                    notify("replica", {"replica": action.name, "state": "reloaded"})
                if watching:
                    clock.sleep(POLL)
    except DockerError as err:
        failed = err.action if isinstance(err, _Failed) else signalled[-1] if signalled else None
        logs = ""
        if failed is not None and failed.actual is not None:
            logs = replica_logs(host, failed.actual.id, failed.name, secrets)
            report.loaded[failed.actual.id] = None
        try:
            _revert(host, spec, signalled, report, timeout, clock)
        except DockerError as undo_err:
            # E.g. the daemon went away: keep the real cause, say what was not undone.
            report.steps.append(f"could not put the config back: {undo_err}")
        report.failure = f"{err}{logs}"
    return report


class _Failed(DockerError):
    def __init__(self, reason: str, action: Action) -> None:
        super().__init__(reason)
        self.action = action


def _revert(
    host: DockerHost,
    spec: ServiceSpec,
    signalled: list[Action],
    report: ReloadReport,
    timeout: float,
    clock: Clock,
) -> None:
    """``..data`` back to what the signalled replicas had loaded; signal them again."""
    assert spec.config_root is not None
    back_to = next((a.seen_version for a in signalled if a.seen_version), None)
    store = ConfigStore.of(spec)
    if not signalled:
        return
    if not spec.update.rollback:
        report.steps.append("config left in place (update.rollback is off)")
        return
    if back_to is None or not store.has(back_to):
        report.steps.append("config not put back: the version the replicas had is unknown")
        return
    store.activate(back_to)
    report.back_to = back_to
    report.done = []
    for action in signalled:
        assert action.actual is not None and action.signal is not None
        try:
            host.signal(action.actual.id, action.name, action.signal)
        except DockerError as err:
            report.steps.append(f"{action.name} not signalled back: {err}")
            report.loaded[action.actual.id] = None
            continue
        healthy = _recovers(host, action.actual.id, timeout, clock)
        state = "healthy" if healthy else f"NOT healthy within {timeout:g}s"
        report.steps.append(f"sent {action.signal} to {action.name} again ({state})")
        report.reverted.append(action.name)
        report.loaded[action.actual.id] = back_to if healthy else None


def _recovers(host: DockerHost, container_id: str, timeout: float, clock: Clock) -> bool:
    """Whether a container is (back to) running and healthy within ``timeout``.

    Unlike :class:`HealthWatch` it waits through ``unhealthy``: a replica that
    failed its reload stays reported unhealthy until its next passing check.
    """
    deadline = clock.now() + timeout
    while True:
        details = host.inspect(container_id)
        state = details.get("State") or {}
        has_check = bool(((details.get("Config") or {}).get("Healthcheck") or {}).get("Test"))
        health = (state.get("Health") or {}).get("Status")
        if state.get("Status") == "running" and (health == "healthy" or not has_check):
            return True
        if clock.now() > deadline:
            return False
        clock.sleep(POLL)
