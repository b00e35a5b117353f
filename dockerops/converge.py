"""Converge one host's containers to a service spec: plan, act, verify.

Replicas are replaced by the rollout engine (:mod:`dockerops.rollout`), each
gated by health (:mod:`dockerops.health`); when one fails, the replicas
already replaced go back to exactly the containers they were (from their
``inspect``), the config directory goes back to its previous version, and the
result is a failure that says what happened. Only a config change on a service
with ``on_change: restart`` replaces all its replicas at once. Each step
returns its report; :func:`_fold` is the one place they go into the
:class:`ServiceResult`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .backup import interrupted_restore, recover_window
from .config import ConfigStore, RenderedConfig
from .configcheck import (
    ReloadReport,
    config_change,
    prune_versions,
    publish,
    reload_replicas,
    replica_logs,
)
from .errors import DockerError, NotFound, SpecError
from .events import Progress, Wakeup, quiet
from .health import Clock, min_healthy_time
from .history import History
from .host import DockerHost, remove_all
from .inputs import service_volumes
from .ledger import Ledger
from .lock import LockHeld, RolloutLock
from .masking import redact
from .plan import Action, plan_service
from .records import DEFAULT_HISTORY_KEEP, DEFAULT_STATE_DIR, ServiceRecord, StateDirError
from .replicas import ActualReplica, desired_replicas, secret_keys_of
from .rollout import (
    Rollout,
    RolloutFailed,
    RolloutReport,
    Slots,
    prove,
    replace,
    slot_schedule,
    watch_all,
)
from .spec import ServiceSpec, check_service_name


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
    # Live-mounted replicas whose config reload this run proved (or undid):
    # container id -> the version loaded now (None: unknown, forget the record).
    config_loaded: dict[str, str | None] = field(default_factory=dict)
    # What this run found left behind by an interrupted one, and what it did about it.
    recovered: list[str] = field(default_factory=list)
    # Replicas now running under another name (start-first): replaced -> replacement.
    running_as: dict[str, str] = field(default_factory=dict)
    # The service's containers as the last plan listed them: what runs now,
    # unless the run failed (see dockerops.status.service_ports).
    listed: list[ActualReplica] = field(default_factory=list)

    @property
    def changes(self) -> dict[str, Any]:
        """Per container, keyed by the name that runs now (a start-first
        replacement names the container it replaced under ``container``)."""
        actions = self.done if self.result is False else self.actions
        out: dict[str, Any] = {}
        for action in actions:
            change = action.describe()
            name = self.running_as.get(action.name, action.name)
            if name != action.name:
                change["container"] = {"old": action.name, "new": name}
            # A name removed then reused by a replacement shows both.
            out.setdefault(name, {}).update(change)
        out.update(self.extra_changes)
        if self.config_changes:
            out["config"] = self.config_changes
        if self.rolled_back:
            out["rolled_back"] = list(self.rolled_back)
        if self.recovered:
            out["recovered"] = list(self.recovered)
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
    """The service's secret values now, and every secret its containers hold.

    A rotated or renamed secret must stay hidden too: a config diff shows the
    old file. A container names its secret env entries in a label
    (``io.dockerops.secret-keys``); for one created before that label, every
    env entry that is neither pillar's plain env (same value) nor its image's
    counts as secret. Containers that hold no secret are not inspected.
    """
    values = set(spec.secret_values)
    image_env: dict[str, set[str]] = {}
    for container in host.managed(spec.name):
        if container.secret_keys == () and not spec.secrets:
            continue
        try:
            config = host.inspect(container.id).get("Config") or {}
        except NotFound:  # removed since the list: its values are no longer shown
            continue
        entries = [str(entry) for entry in config.get("Env") or []]
        keys = secret_keys_of(config.get("Labels") or {})
        for entry in entries:
            key, _, value = entry.partition("=")
            if not value:
                continue
            if key in spec.secrets or (keys is not None and key in keys):
                values.add(value)
            elif keys is None and spec.env.get(key) != value:
                image = str(config.get("Image") or "")
                if image not in image_env:
                    image_env[image] = _image_env(host, image)
                if entry not in image_env[image]:
                    values.add(value)
    return sorted(values)


def _image_env(host: DockerHost, image: str) -> set[str]:
    try:
        details = host.inspect_image(image) if image else {}
    except DockerError:
        return set()
    return {str(entry) for entry in (details.get("Config") or {}).get("Env") or []}


def _store(spec: ServiceSpec) -> ConfigStore | None:
    return ConfigStore.of(spec) if spec.config_root else None


def plan(
    host: DockerHost,
    spec: ServiceSpec,
    config_version: str | None = None,
    state_dir: str = DEFAULT_STATE_DIR,
    listed: list[ActualReplica] | None = None,
) -> list[Action]:
    """The container actions that would converge ``spec`` on ``host`` (reads only).

    ``listed``: the service's containers, if the caller has just listed them.
    """
    signal = spec.config.signal if spec.config else None
    seen = ServiceRecord(state_dir, spec.name).config_seen() if signal else {}
    slots = desired_replicas(spec, config_version, spec.slots)
    proven = Ledger(state_dir, spec.name).proven()
    actual = host.managed(spec.name) if listed is None else listed
    return plan_service(slots, actual, seen, signal, count=spec.replicas, proven=proven)


def converge(
    host: DockerHost,
    spec: ServiceSpec,
    rendered: RenderedConfig | None = None,
    state_dir: str = DEFAULT_STATE_DIR,
    test: bool = False,
    config_reported: bool = False,
    progress: Progress | None = None,
    jid: str | None = None,
    history_keep: int = DEFAULT_HISTORY_KEEP,
    clock: Clock | None = None,
) -> ServiceResult:
    """Make ``host`` run ``spec`` (with ``rendered`` config). Under ``test`` touch nothing.

    ``config_reported``: a ``config_managed`` state of this run already reported
    (and, unless testing, wrote) this config version; it is not reported twice.
    ``progress(stage, data)`` is told of each step (the Salt face fires events);
    ``jid`` goes into the rollout lock and the history, which keeps the
    newest ``history_keep`` entries. ``clock`` keeps the time of the health
    waits (a simulated one in tests); each wait ends early on Docker's events.

    The image is pulled before any container is touched; the service's rollout
    lock is held while acting; every run that changed containers is recorded in
    the service's history.
    """
    if spec.config is not None and rendered is None:
        raise ValueError(f"service {spec.name} has a config directory: pass its rendering")
    version = rendered.version if rendered else None
    store = _store(spec)
    recovered: list[str] = []
    if not test:
        try:
            recovered = recover_window(host, spec, state_dir, lambda _text: None)
        except DockerError as err:
            failed = ServiceResult(spec.name, spec.replicas, [], result=False)
            failed.errors.append(str(err))
            return failed
    # The first look may be the state run's one list of the host (see
    # DockerHost.managed); everything done under the lock below lists afresh.
    listed = host.managed(spec.name, kept=True)
    actions = plan(host, spec, version, state_dir, listed)
    outcome = ServiceResult(spec.name, spec.replicas, actions, listed=listed)
    outcome.recovered.extend(recovered)
    # Replicas killed mid-restore may run on the restored data with the previous
    # data aside: not "in the desired state" until undone (one stat, no Docker call).
    interrupted = interrupted_restore(state_dir, spec.name)
    if interrupted:
        outcome.result = False
        outcome.errors.append(interrupted)
        outcome.actions = []
        return outcome
    # The version ..data points at now: read once, it serves all three uses below.
    previous_version = store.current() if store else None
    if store is not None and rendered is not None and not config_reported:
        outcome.config_changes = config_change(
            store, rendered, previous_version, lambda: known_secrets(host, spec)
        )
    # config_managed leaves a signal service's version for running to activate.
    unpublished = store is not None and rendered is not None and previous_version != version
    if not actions and not outcome.config_changes and (test or not unpublished):
        return outcome
    if test:
        outcome.result = None
        outcome.running_as = _will_run_as(host, spec, actions, version)
        return outcome

    notify = progress or quiet
    started = time.time()
    from_images = _from_images(actions)
    lock = RolloutLock(state_dir, spec.name)
    ledger = Ledger(state_dir, spec.name)
    try:
        lock.acquire(jid, "rollout")
    except (LockHeld, StateDirError) as err:
        outcome.result = False
        outcome.errors.append(str(err))
        outcome.actions = []
        return outcome
    # An interrupted restore may have left a data directory aside or half
    # swapped: starting replicas now could run the app on missing data.
    interrupted = interrupted_restore(state_dir, spec.name)
    if interrupted:
        lock.release()
        outcome.result = False
        outcome.errors.append(interrupted)
        outcome.actions = []
        return outcome
    left_by = lock.previous
    if left_by is not None:  # {}: its holder's record was unreadable
        outcome.recovered.append(
            f"lock left by pid {left_by.get('pid')} (job {left_by.get('jid')}, "
            f"{left_by.get('what', 'rollout')} since {left_by.get('since')}), which died"
        )
    try:
        ledger.adopt(c.id for c in host.managed(spec.name))
        # Another run may have acted between our plan and our lock: plan again.
        actions = outcome.actions = plan(host, spec, version, state_dir)
        from_images = _from_images(actions)
        _pull(host, spec, actions)
        made = _ensure_volumes(host, spec, actions)
        if made:
            outcome.extra_changes["volumes"] = {"created": made}
        settle = min_healthy_time(host, spec) if actions else 0.0
        rollout = Rollout(host, spec, settle, ledger, notify, clock or Clock())
        notify("start", {"to": spec.image_ref, "actions": [f"{a.kind} {a.name}" for a in actions]})
        proofs = [a for a in actions if a.kind == "prove"]
        if proofs or ledger.stopped_in_place():
            _recover(rollout, proofs, outcome)
            actions = plan(host, spec, version, state_dir)
            outcome.actions = proofs + actions
            _pull(host, spec, actions)
        if store is not None and rendered is not None:
            # Checked before ..data moves and before any replica is created or signalled.
            secrets = _secrets_if_reachable(host, spec)
            outcome.steps.extend(publish(host, spec, store, rendered, state_dir, secrets))
        _execute(rollout, actions, outcome, version)
    except (DockerError, SpecError) as err:
        outcome.result = False
        outcome.errors.append(redact(str(err), _secrets_if_reachable(host, spec)))
        back_to = outcome.previous_config or previous_version
        restore = spec.update.rollback and back_to != (rendered.version if rendered else None)
        try:
            if (  # a step only when ..data really moved back
                store is not None
                and back_to
                and restore
                and store.has(back_to)
                and store.activate(back_to)
            ):
                outcome.steps.append(f"config back to version {back_to}")
        except DockerError as undo_err:  # keep the run's own error first
            outcome.steps.append(f"could not put the config back: {undo_err}")
        if store is not None and store.current() != version:
            # The version never became (or no longer is) current: not a change.
            outcome.config_changes = {}
    finally:
        try:
            _remember(host, spec, store, state_dir, outcome, ledger)
        except DockerError as err:
            # The run's own outcome (and its history entry) matters more.
            outcome.steps.append(
                redact(f"could not record what runs now: {err}", spec.secret_values)
            )
        try:
            # Under the lock: the next rollout sees this one in the history.
            if any(a.kind != "signal" for a in outcome.actions) or outcome.recovered:
                entry = {
                    "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                    "from": from_images[0] if len(from_images) == 1 else from_images or None,
                    "to": spec.image_ref,
                    "config_version": version,
                    "actions": [f"{a.kind} {a.name}" for a in outcome.actions],
                    "result": outcome.result is not False,
                    "rolled_back": outcome.rolled_back,
                    "duration": round(time.time() - started, 2),
                    "jid": jid,
                    "error": outcome.errors[0] if outcome.errors else None,
                    "recovered": outcome.recovered,
                }
                History(state_dir, spec.name, keep=history_keep).append(entry)
        except StateDirError as err:
            outcome.result = False
            outcome.errors.append(str(err))
        finally:
            lock.release()
    notify("done", {"result": outcome.result is not False, "rolled_back": outcome.rolled_back})
    if outcome.result is not False:
        try:
            outcome.listed = host.managed(spec.name)
            left = plan(host, spec, version, state_dir, outcome.listed)
        except DockerError as err:
            left = []
            outcome.result = False
            outcome.errors.append(f"checking the result: {err}")
        if left:
            outcome.result = False
            outcome.errors.append(
                "still differs after converging: " + ", ".join(f"{a.kind} {a.name}" for a in left)
            )
    return outcome


def _execute(
    rollout: Rollout, actions: list[Action], outcome: ServiceResult, config_version: str | None
) -> None:
    """Carry out the plan: removals, new replicas, replacements, config signals.

    Each step's report is folded into ``outcome`` (:func:`_fold`); a failed one
    raises :class:`RolloutFailed` for :func:`converge` to handle like any error.
    """
    host, spec = rollout.host, rollout.spec
    removals = [a for a in actions if a.kind == "remove"]
    failed = []
    # All at once: removing N replicas costs one grace period, not N.
    gone = remove_all(host, [(a.actual.id, a.name) for a in removals if a.actual is not None])
    stops = []
    for action, stop in zip(removals, gone, strict=True):
        if isinstance(stop, DockerError):
            failed.append(stop)
            continue
        if stop is not None:
            stops.append(stop)
            if stop.hint:
                outcome.steps.append(f"{stop.container} {stop.hint}")
        outcome.steps.append(f"removed {action.name}")
        outcome.done.append(action)
    if stops:
        # They stopped together: one record write, keeping a kill (and its hint) seen.
        rollout.ledger.record_stop(max(stops, key=lambda s: (s.killed, s.seconds)))
    if failed:
        raise failed[0]

    _fold(outcome, _start_new(rollout, actions))

    recreates = [a for a in actions if a.kind == "recreate"]
    if recreates:
        slots = Slots.of(
            desired_replicas(spec, config_version, spec.slots),
            (c.index for c in host.managed(spec.name)),
        )
        with _woken(rollout) as woken:
            _fold(outcome, replace(woken, recreates, slots, _all_at_once(spec, recreates)))

    signals = [a for a in actions if a.kind == "signal"]
    if signals:
        secrets = _secrets_if_reachable(host, spec)
        _fold(
            outcome, reload_replicas(host, spec, signals, rollout.settle, rollout.notify, secrets)
        )


def _all_at_once(spec: ServiceSpec, recreates: list[Action]) -> bool:
    """Only a config change on an ``on_change: restart`` service replaces all at once."""
    return (
        spec.config is not None
        and spec.config.on_change == "restart"
        and all(set(a.changed) == {"config"} for a in recreates)
    )


def _will_run_as(
    host: DockerHost, spec: ServiceSpec, actions: list[Action], config_version: str | None
) -> dict[str, str]:
    """Under test: the name each replacement will run as (see :func:`slot_schedule`),
    where it differs from the replica it replaces."""
    recreates = [a for a in actions if a.kind == "recreate"]
    if not recreates:
        return {}
    removed = {a.index for a in actions if a.kind == "remove"}
    created = {a.index for a in actions if a.kind == "create"}
    now = {c.index for c in host.managed(spec.name)}
    slots = Slots.of(desired_replicas(spec, config_version, spec.slots), (now - removed) | created)
    schedule = slot_schedule(spec, recreates, slots, _all_at_once(spec, recreates))
    names = {a.name: slots.desired[schedule[a.name]].name for a in recreates}
    return {old: new for old, new in names.items() if old != new}


@contextlib.contextmanager
def _woken(rollout: Rollout) -> Iterator[Rollout]:
    """``rollout`` whose waits end early when Docker reports an event for the service."""
    wakeup = Wakeup(rollout.host, rollout.spec.name, rollout.clock.sleep)
    try:
        yield dataclasses.replace(rollout, clock=Clock(rollout.clock.now, wakeup.sleep))
    finally:
        wakeup.close()


def _start_new(rollout: Rollout, actions: list[Action]) -> RolloutReport:
    """Create or start the replicas of ``create``/``start`` actions; each must come up.

    They replace nothing, so they start together and are watched together
    (:func:`watch_all`): their health waits and ``min_healthy_time`` holds
    overlap. Each that counts is proven; the first (in plan order) that does
    not is the failure.
    """
    host, report = rollout.host, RolloutReport()
    fresh: list[tuple[str, Action]] = []
    for action in (a for a in actions if a.kind in ("start", "create")):
        if action.kind == "start":
            assert action.actual is not None
            host.start(action.actual.id, action.name)
            fresh.append((action.actual.id, action))
        else:
            assert action.desired is not None
            fresh.append((host.create(action.desired), action))
        report.carried_out.append(action)
    if not fresh:
        return report
    for container_id, _action in fresh:
        report.touched.add(container_id)
    with _woken(rollout) as woken:
        verdicts = watch_all(
            woken,
            [(a.name, cid, 0 if a.kind == "create" else None) for cid, a in fresh],
        )
    for container_id, action in fresh:
        health = verdicts[action.name]
        if not health.healthy:
            continue
        rollout.ledger.prove(container_id)
        report.steps.append(f"started {action.name} (healthy in {health.seconds:.1f}s)")
        rollout.notify("replica", {"replica": action.name, "state": "healthy"})
    for container_id, action in fresh:
        health = verdicts[action.name]
        if not health.healthy:
            logs = replica_logs(host, container_id, action.name, rollout.spec.secret_values)
            report.failure = health.reason + logs
            break
    return report


def _fold(outcome: ServiceResult, report: RolloutReport | ReloadReport) -> None:
    """Fold one step's report into the service's result (the one place that does);
    raise :class:`RolloutFailed` with its failure, if it failed."""
    outcome.touched |= report.touched
    outcome.steps.extend(report.steps)
    if isinstance(report, RolloutReport):
        outcome.done.extend(report.carried_out)
        for item in report.done:
            outcome.done.append(item.action)
            if item.new_name != item.action.name:
                outcome.running_as[item.action.name] = item.new_name
        outcome.rolled_back.extend(report.rolled_back)
        if not report.ok:
            # The config the replaced replicas ran: where a failed run puts ..data back.
            outcome.previous_config = report.previous_config
    else:
        outcome.done.extend(report.done)
        outcome.config_loaded.update(report.loaded)
        outcome.rolled_back.extend(report.reverted)
        if report.back_to:
            outcome.previous_config = report.back_to
            outcome.steps.append(f"config back to version {report.back_to}")
    if report.failure is not None:
        raise RolloutFailed(report.failure)


def _from_images(actions: list[Action]) -> list[str]:
    """The images the replicas to replace run now (for the history's ``from``)."""
    return sorted({a.actual.image for a in actions if a.kind == "recreate" and a.actual})


def _ensure_volumes(host: DockerHost, spec: ServiceSpec, actions: list[Action]) -> list[str]:
    """Make the service's missing volumes before any replica is touched (their
    names): a volume that differs from pillar fails the run here, not halfway
    through a rollout."""
    if not any(a.kind in ("create", "recreate") for a in actions):
        return []
    doing = f"service {spec.name}"
    return [v.name for v in service_volumes(spec) if host.ensure_volume(v, doing)]


def _pull(host: DockerHost, spec: ServiceSpec, actions: list[Action]) -> None:
    """Make sure the image is here before any container is touched.

    A version that cannot be pulled fails here, before any change.
    """
    touched = [a.index for a in actions if a.kind in ("create", "recreate")]
    if touched:
        replicas = ", ".join(str(i) for i in touched)
        host.ensure_image(spec.image_ref, f"service {spec.name} replica {replicas}")


def _recover(rollout: Rollout, proofs: list[Action], outcome: ServiceResult) -> None:
    """Deal with what an interrupted run left behind, before anything else.

    Its unproven replicas (``prove`` actions) must prove themselves now, as
    any replacement must; one that does not is removed. Replicas it stopped in
    place whose slot is empty now are put back from their journaled inspect.
    The replicas they were to replace were never removed (an old replica goes
    only once its replacement counts), so capacity holds throughout. Raises
    :class:`RolloutFailed` when a leftover failed: the run ends failed, never
    "converged" onto an unproven version.
    """
    host, spec, ledger, settle = rollout.host, rollout.spec, rollout.ledger, rollout.settle
    why = "left unproven by an interrupted run"
    failed = []
    verdicts = []
    if proofs:
        with _woken(rollout) as woken:
            verdicts = prove(woken, proofs)
    for action, verdict in verdicts:
        assert action.actual is not None and action.index is not None
        outcome.done.append(action)
        if verdict.healthy:
            ledger.prove(action.actual.id)
            ledger.settle(action.index)
            outcome.recovered.append(f"{action.name}: {why}; proved healthy now")
            outcome.steps.append(f"proved {action.name} ({why})")
            rollout.notify("replica", {"replica": action.name, "state": "healthy"})
            continue
        logs = replica_logs(host, action.actual.id, action.name, spec.secret_values)
        host.remove(action.actual.id, action.name, graceful=False)
        failed.append(verdict.reason + logs)
        outcome.recovered.append(f"{action.name}: {why}; {verdict.reason}; removed")
        outcome.steps.append(f"removed {action.name} ({why}: {verdict.reason})")
    journal = ledger.stopped_in_place()
    if journal:
        occupied = {c.index for c in host.managed(spec.name)}
        for slot, before in sorted(journal.items()):
            if slot in occupied:
                ledger.settle(slot)
                continue
            name = str(before.get("Name", "")).lstrip("/")
            try:
                old_id = host.recreate_from(before, spec.trusted_root)
            except NotFound as err:  # its image is gone: it cannot come back, ever
                ledger.settle(slot)
                outcome.recovered.append(
                    f"{name}: stopped in place by an interrupted run; cannot be put back: {err}"
                )
                continue
            health = host.wait_healthy(old_id, name, spec.update.health_timeout, settle, restarts=0)
            if health.healthy:
                ledger.prove(old_id)
            ledger.settle(slot)
            state = "healthy" if health.healthy else f"NOT healthy: {health.reason}"
            outcome.recovered.append(f"{name}: stopped in place by an interrupted run; put back")
            outcome.steps.append(f"put back {name}, stopped by an interrupted run ({state})")
            outcome.touched.add(old_id)
    if failed:
        raise RolloutFailed(
            "replicas left by an interrupted run did not prove healthy: " + "; ".join(failed)
        )


def _secrets_if_reachable(host: DockerHost, spec: ServiceSpec) -> list[str]:
    """:func:`known_secrets`, or pillar's alone when the daemon does not answer."""
    try:
        return known_secrets(host, spec)
    except DockerError:
        return list(spec.secret_values)


def _remember(
    host: DockerHost,
    spec: ServiceSpec,
    store: ConfigStore | None,
    state_dir: str,
    outcome: ServiceResult,
    ledger: Ledger,
) -> None:
    """Record which config version live replicas loaded; prune unused versions;
    forget proven containers that are gone."""
    containers = host.managed(spec.name)
    ledger.keep_only(c.id for c in containers)
    if store is None or spec.config is None:
        return
    if spec.config.live:
        record = ServiceRecord(state_dir, spec.name)
        old = record.config_seen()
        current = store.current() or ""
        seen = {}
        for container in containers:
            if container.id in outcome.config_loaded:
                # Signalled: only a proven reload (or one undone) is recorded.
                loaded = outcome.config_loaded[container.id]
                if loaded:
                    seen[container.id] = loaded
            elif container.id in outcome.touched:
                seen[container.id] = current
            elif container.id in old:
                seen[container.id] = old[container.id]
        record.set_config_seen(seen)
    prune_versions(spec, store, containers, ledger)


def remove_service(
    host: DockerHost, service: str, test: bool = False, state_dir: str | None = None
) -> ServiceResult:
    """Remove every container of ``service`` from ``host``.

    With ``state_dir``, what the service's ledger remembers goes too: a replica
    an interrupted run stopped in place must not come back after a removal.
    """
    check_service_name(service)  # never "" for every service
    actions = plan_service([], host.managed(service))
    outcome = ServiceResult(service, 0, actions, result=None if test and actions else True)
    if test:
        return outcome
    gone = remove_all(host, [(a.actual.id, a.name) for a in actions if a.actual is not None])
    for stop in gone:
        if isinstance(stop, DockerError):
            outcome.errors.append(str(stop))
            outcome.result = False
    if state_dir is not None and outcome.result is not False:
        ledger = Ledger(state_dir, service)
        ledger.settle()
        ledger.keep_only(())
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
        outcome.errors.append(redact(str(err), _secrets_if_reachable(host, spec)))
    return outcome
