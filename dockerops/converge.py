"""Converge one host's containers to a service spec: plan, act, verify.

Replicas are replaced one at a time, each gated by health (see
:meth:`dockerops.host.DockerHost.wait_healthy`); when one fails, the replicas
already replaced go back to exactly the containers they were (from their
``inspect``), the config directory goes back to its previous version, and the
result is a failure that says what happened. Only a config change on a service
with ``on_change: restart`` replaces all its replicas at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .config import ConfigStore, RenderedConfig, redact
from .errors import DockerError, SpecError
from .history import History, LockHeld, RolloutLock
from .host import Clock, DockerHost, Wakeup
from .plan import Action, plan_service
from .records import DEFAULT_STATE_DIR, ServiceRecord
from .replicas import ActualReplica, desired_replicas
from .rollout import Progress, RolloutFailed, min_healthy_time, replace
from .spec import ServiceSpec


@dataclass
class ServiceResult:
    """What converging one service did (or, under test, would do)."""

    service: str
    replicas: int
    actions: list[Action]
    config_changes: dict[str, Any] = field(default_factory=dict)
    result: bool | None = True
    errors: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    # Containers created or signalled by this run (a watch must not restart them again).
    touched: set[str] = field(default_factory=set)
    # Per-replica changes that are not container actions (restarts, signals).
    extra_changes: dict[str, Any] = field(default_factory=dict)
    # The config version replaced replicas ran before this run changed it.
    previous_config: str | None = None
    # Actions carried out (on failure, changes report only these).
    done: list[Action] = field(default_factory=list)

    @property
    def changes(self) -> dict[str, Any]:
        actions = self.done if self.result is False else self.actions
        out: dict[str, Any] = {action.name: action.describe() for action in actions}
        out.update(self.extra_changes)
        if self.config_changes:
            out["config"] = self.config_changes
        if self.rolled_back:
            out["rolled_back"] = list(self.rolled_back)
        return out

    @property
    def comment(self) -> str:
        if self.errors:
            text = f"Service {self.service} failed: " + "; ".join(self.errors)
            return text + (" (" + "; ".join(self.steps) + ")" if self.steps else "")
        if not self.actions and not self.config_changes and not self.extra_changes:
            return f"Service {self.service} is in the desired state ({self.replicas} replicas)"
        verbs = [f"{a.kind} {a.name}" for a in self.actions]
        if self.config_changes:
            verbs.insert(0, f"config version {self.config_changes['version']['new']}")
        if self.result is None:
            return f"Service {self.service} would change: " + ", ".join(verbs)
        return f"Service {self.service} converged: " + "; ".join(self.steps or verbs)


def known_secrets(host: DockerHost, spec: ServiceSpec) -> list[str]:
    """The service's secret values now, and those its containers still run with.

    A rotated secret must stay hidden too: a config diff shows the old file.
    """
    values = set(spec.secret_values)
    if spec.secrets:
        for container in host.managed(spec.name):
            env = (host.inspect(container.id).get("Config") or {}).get("Env") or []
            for entry in env:
                key, _, value = str(entry).partition("=")
                if key in spec.secrets and value:
                    values.add(value)
    return sorted(values)


def _store(spec: ServiceSpec) -> ConfigStore | None:
    return ConfigStore(spec.config_root) if spec.config_root else None


def plan(
    host: DockerHost,
    spec: ServiceSpec,
    config_version: str | None = None,
    state_dir: str = DEFAULT_STATE_DIR,
) -> list[Action]:
    """The container actions that would converge ``spec`` on ``host`` (reads only)."""
    signal = spec.config.signal if spec.config else None
    seen = ServiceRecord(state_dir, spec.name).config_seen() if signal else {}
    slots = desired_replicas(spec, config_version, spec.slots)
    return plan_service(slots, host.managed(spec.name), seen, signal, count=spec.replicas)


def converge(
    host: DockerHost,
    spec: ServiceSpec,
    rendered: RenderedConfig | None = None,
    state_dir: str = DEFAULT_STATE_DIR,
    test: bool = False,
    config_reported: bool = False,
    progress: Progress | None = None,
    jid: str | None = None,
) -> ServiceResult:
    """Make ``host`` run ``spec`` (with ``rendered`` config). Under ``test`` touch nothing.

    ``config_reported``: a ``config_managed`` state of this run already reported
    (and, unless testing, wrote) this config version; it is not reported twice.
    ``progress(stage, data)`` is told of each step (the Salt face fires events);
    ``jid`` goes into the rollout lock and the history.

    The image is pulled before any container is touched; the service's rollout
    lock is held while acting; every run that changed containers is recorded in
    the service's history.
    """
    if spec.config is not None and rendered is None:
        raise ValueError(f"service {spec.name} has a config directory: pass its rendering")
    version = rendered.version if rendered else None
    store = _store(spec)
    actions = plan(host, spec, version, state_dir)
    outcome = ServiceResult(spec.name, spec.replicas, actions)
    if store is not None and rendered is not None and not config_reported:
        current = store.current()
        if current != rendered.version or not store.has(rendered.version):
            outcome.config_changes = {
                "version": {"old": current, "new": rendered.version},
                "files": store.diff(rendered, known_secrets(host, spec)),
            }
    if not actions and not outcome.config_changes:
        return outcome
    if test:
        outcome.result = None
        return outcome

    notify = progress or (lambda _stage, _data: None)
    previous_version = store.current() if store else None
    started = time.time()
    from_images = sorted({a.actual.image for a in actions if a.kind == "recreate" and a.actual})
    lock = RolloutLock(state_dir, spec.name)
    try:
        lock.acquire(jid, "rollout")
    except LockHeld as err:
        outcome.result = False
        outcome.errors.append(str(err))
        outcome.actions = []
        return outcome
    try:
        if any(a.kind in ("create", "recreate") for a in actions):
            # A version that cannot be pulled fails here, before any change.
            touched = [a.index for a in actions if a.kind in ("create", "recreate")]
            replicas = ", ".join(str(i) for i in touched)
            host.ensure_image(spec.image_ref, f"service {spec.name} replica {replicas}")
        settle = min_healthy_time(host, spec) if actions else 0.0
        notify("start", {"to": spec.image_ref, "actions": [f"{a.kind} {a.name}" for a in actions]})
        if store is not None and rendered is not None:
            store.write(rendered)
            store.activate(rendered.version)
        _execute(host, spec, actions, outcome, settle, notify, version)
    except (DockerError, SpecError) as err:
        outcome.result = False
        outcome.errors.append(redact(str(err), known_secrets(host, spec)))
        back_to = outcome.previous_config or previous_version
        restore = spec.update.rollback and back_to != (rendered.version if rendered else None)
        if store is not None and back_to and restore and store.has(back_to):
            store.activate(back_to)
            outcome.steps.append(f"config back to version {back_to}")
    finally:
        try:
            _remember(host, spec, store, state_dir, outcome)
        finally:
            lock.release()
    if any(a.kind != "signal" for a in actions):
        History(state_dir, spec.name).append(
            {
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                "from": from_images[0] if len(from_images) == 1 else from_images or None,
                "to": spec.image_ref,
                "config_version": version,
                "actions": [f"{a.kind} {a.name}" for a in actions],
                "result": outcome.result is not False,
                "rolled_back": outcome.rolled_back,
                "duration": round(time.time() - started, 2),
                "jid": jid,
                "error": outcome.errors[0] if outcome.errors else None,
            }
        )
    notify("done", {"result": outcome.result is not False, "rolled_back": outcome.rolled_back})
    if outcome.result is not False:
        left = plan(host, spec, version, state_dir)
        if left:
            outcome.result = False
            outcome.errors.append(
                "still differs after converging: " + ", ".join(f"{a.kind} {a.name}" for a in left)
            )
    return outcome


def _execute(
    host: DockerHost,
    spec: ServiceSpec,
    actions: list[Action],
    outcome: ServiceResult,
    settle: float,
    notify: Progress,
    config_version: str | None,
) -> None:
    timeout = spec.update.health_timeout
    for action in (a for a in actions if a.kind == "remove"):
        assert action.actual is not None
        host.remove(action.actual.id, action.name)
        outcome.steps.append(f"removed {action.name}")
        outcome.done.append(action)

    fresh: list[tuple[str, Action]] = []
    for action in (a for a in actions if a.kind in ("start", "create")):
        if action.kind == "start":
            assert action.actual is not None
            host.start(action.actual.id, action.name)
            fresh.append((action.actual.id, action))
        else:
            assert action.desired is not None
            fresh.append((host.create(action.desired), action))
        outcome.done.append(action)
    # New replicas replace nothing, so they start together; each must come up.
    for container_id, action in fresh:
        outcome.touched.add(container_id)
        since = 0 if action.kind == "create" else None
        health = host.wait_healthy(container_id, action.name, timeout, settle, restarts=since)
        if not health.healthy:
            raise RolloutFailed(health.reason)
        outcome.steps.append(f"started {action.name} (healthy in {health.seconds:.1f}s)")
        notify("replica", {"replica": action.name, "state": "healthy"})

    recreates = [a for a in actions if a.kind == "recreate"]
    if recreates:
        all_at_once = (
            spec.config is not None
            and spec.config.on_change == "restart"
            and all(set(a.changed) == {"config"} for a in recreates)
        )
        total = spec.slots
        slots = {r.index: r for r in desired_replicas(spec, config_version, total)}
        occupied = {c.index for c in host.managed(spec.name) if c.index is not None}
        wakeup = Wakeup(host, spec.name)
        try:
            report = replace(
                host,
                spec,
                recreates,
                slots,
                occupied,
                settle,
                all_at_once,
                notify,
                Clock(sleep=wakeup.sleep),
            )
        except RolloutFailed as err:
            if err.report is not None:
                outcome.touched |= err.report.touched
                outcome.steps.extend(err.report.steps)
                outcome.rolled_back = err.report.rolled_back
                outcome.previous_config = err.report.previous_config
                back = set(err.report.rolled_back)
                outcome.done.extend(
                    r.action for r in err.report.replaced if r.action.name not in back and r.new_id
                )
            raise
        finally:
            wakeup.close()
        outcome.touched |= report.touched
        outcome.steps.extend(report.steps)
        outcome.done.extend(recreates)

    for action in (a for a in actions if a.kind == "signal"):
        assert action.actual is not None and action.signal is not None
        host.signal(action.actual.id, action.name, action.signal)
        outcome.touched.add(action.actual.id)
        outcome.steps.append(f"sent {action.signal} to {action.name}")
        outcome.done.append(action)


def _remember(
    host: DockerHost,
    spec: ServiceSpec,
    store: ConfigStore | None,
    state_dir: str,
    outcome: ServiceResult,
) -> None:
    """Record which config version live replicas loaded; prune unused versions."""
    if store is None or spec.config is None:
        return
    containers = host.managed(spec.name)
    if spec.config.live:
        record = ServiceRecord(state_dir, spec.name)
        old = record.config_seen()
        current = store.current() or ""
        seen = {}
        for container in containers:
            if container.id in outcome.touched:
                seen[container.id] = current
            elif container.id in old:
                seen[container.id] = old[container.id]
        record.set_config_seen(seen)
    in_use = {c.config_version for c in containers if c.config_version}
    store.prune(spec.config.keep, in_use)


def remove_service(host: DockerHost, service: str, test: bool = False) -> ServiceResult:
    """Remove every container of ``service`` from ``host``."""
    actions = plan_service([], host.managed(service))
    outcome = ServiceResult(service, 0, actions, result=None if test and actions else True)
    if test:
        return outcome
    for action in actions:
        assert action.actual is not None
        try:
            host.remove(action.actual.id, action.name)
        except DockerError as err:
            outcome.errors.append(str(err))
            outcome.result = False
    return outcome


def restart_service(
    host: DockerHost,
    spec: ServiceSpec,
    rolling: bool = True,
    exclude: set[str] | None = None,
    test: bool = False,
) -> ServiceResult:
    """Restart a service's running replicas as its ``on_change`` says.

    ``signal:*`` sends the signal, ``none`` does nothing, ``restart`` (or
    ``rolling=False``) restarts all at once, ``rolling`` one at a time, each
    health-gated. Containers in ``exclude`` (already fresh) are skipped.
    """
    policy = spec.config.on_change if spec.config else "rolling"
    running: list[ActualReplica] = sorted(
        (c for c in host.managed(spec.name) if c.state == "running"),
        key=lambda c: c.index or 0,
    )
    targets = [c for c in running if c.id not in (exclude or set())]
    outcome = ServiceResult(spec.name, spec.replicas, [])
    if policy == "none" or not targets:
        outcome.steps.append("nothing to restart")
        return outcome
    signal = policy.split(":", 1)[1] if policy.startswith("signal:") else None
    verb = "signaled" if signal else "restarted"
    outcome.extra_changes = {c.name: {verb: signal or True} for c in targets}
    outcome.result = None if test else True
    outcome.steps = [f"{verb} {c.name}" for c in targets]
    if test:
        return outcome
    timeout = spec.update.health_timeout
    try:
        settle = min_healthy_time(host, spec)
        if signal:
            for container in targets:
                host.signal(container.id, container.name, signal)
        elif policy == "restart" or not rolling:
            for container in targets:
                host.restart(container.id, container.name)
            for container in targets:
                report = host.wait_healthy(container.id, container.name, timeout, settle)
                if not report.healthy:
                    raise RolloutFailed(report.reason)
        else:
            for container in targets:
                host.restart(container.id, container.name)
                report = host.wait_healthy(container.id, container.name, timeout, settle)
                if not report.healthy:
                    raise RolloutFailed(report.reason)
    except (DockerError, SpecError) as err:
        outcome.result = False
        outcome.errors.append(redact(str(err), spec.secret_values))
    return outcome
