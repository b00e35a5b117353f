"""What the ``dockerops_etcd`` beacon reports: services whose config keys changed in etcd.

Each pass watches, with etcd's own watch (not by reading the keys again), the
prefixes that the services' config files come from (``config:files:<name>:etcd``),
from the revision after the one the last pass saw, for a short bounded time.
It remembers that revision, and which cluster answered, in the state dir
(``<state dir>/beacon/dockerops_etcd.json``), so a minion restart goes on
from where the last pass stopped. A change is reported at most once per
revision. The memory is saved before Salt fires the pass's events (Salt fires
the list the beacon returns, after it returns) and its directory is not
fsynced, so a crash or power cut between the save and the fire can drop one
pass's events.

A pass is bounded in time (beacons run on the minion's main loop): see
:func:`pass_budget`.

Events, tagged ``<service>/<what>`` (Salt prefixes
``salt/beacon/<minion>/dockerops_etcd/``):

- ``changed``: a key under one of the service's prefixes was put or deleted
  since the last pass; one event per service per pass, however many keys
  changed (``keys``: the first :data:`MAX_KEYS` of them, ``keys_total``: how
  many); when the changes since the last pass cannot be known (etcd compacted
  that history, the store went back (restored), another cluster answers at
  the endpoints, or etcd's watch answered something unusable, such as a
  catch-up batch over the size cap), every watched service gets one, with
  ``compacted``, and the next pass goes on from the store's revision then;
- ``unreachable``: etcd could not be read (once, when it stops answering;
  the revision is kept, so the changes made meanwhile are reported after);
- ``reachable``: etcd answers again (once).

The first pass only notes the store's revision (the states rendered the
files from the store as it was): it fires nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SpecError
from .etcd import BAD_ANSWER, EtcdClient, EtcdError, WatchResult
from .records import read_mapping, save_json
from .spec import PILLAR_KEY, EtcdSettings, deep_merge, load_root, load_service

# Keys named in one changed event (the rest are counted in keys_total).
MAX_KEYS = 50
# How long each pass waits for etcd to send the changes since the last one
# (etcd's watch catches up on past revisions about every 100 ms).
DEFAULT_WAIT = 0.3
MAX_WAIT = 5.0
# Connecting to one endpoint (TCP and TLS) during a pass takes at most this
# long (or the settings' timeout, if shorter): a black-holed endpoint leaves
# time for the next one.
CONNECT_TIMEOUT = 2.0
# A pass has at least its wait and this long for its requests.
PASS_SLACK = 2.0


def pass_budget(interval: float, wait: float) -> float:
    """How long one pass may take at most, in seconds: ``max(interval / 2,
    wait + 2)``. Every request of the pass (connecting, authenticating, the
    watch and its wait) ends by then; a pass that runs out of time is an
    ``unreachable`` (kind ``timeout``), and the revision is kept."""
    return max(interval / 2, wait + PASS_SLACK)


@dataclass(frozen=True)
class Pass:
    """What one pass found: the events to fire, what to remember, what to log."""

    events: list[dict[str, Any]]
    memory: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)


def etcd_services(
    pillar: Mapping[str, Any], only: Iterable[str] | None = None
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Per service with config files from etcd: {file name: prefix}; and one
    problem per such service skipped because its pillar does not validate.

    ``only``: just these services (default: every one in pillar).
    """
    raw = pillar.get(PILLAR_KEY)
    services = raw.get("services") if isinstance(raw, Mapping) else None
    if not isinstance(raw, Mapping) or not isinstance(services, Mapping):
        return {}, []
    defaults = raw.get("defaults")
    if not isinstance(defaults, Mapping):
        defaults = {}
    wanted = set(only) if only is not None else None
    found: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    for name in sorted(str(n) for n in services):
        if wanted is not None and name not in wanted:
            continue
        declared = services[name]
        if not isinstance(declared, Mapping) or not _mentions_etcd(deep_merge(defaults, declared)):
            continue  # cheap look first: only these are validated each pass
        try:
            spec = load_service(pillar, name, allow_privileged=True)
        except SpecError as err:
            problems.append(f"service {name} is not watched: {'; '.join(err.problems)}")
            continue
        files = {file: source.prefix for file, source in sorted(spec.etcd_files.items())}
        if files:
            found[name] = files
    return found, problems


def _mentions_etcd(service: Mapping[str, Any]) -> bool:
    config = service.get("config")
    files = config.get("files") if isinstance(config, Mapping) else None
    if not isinstance(files, Mapping):
        return False
    return any(isinstance(f, Mapping) and f.get("etcd") is not None for f in files.values())


def store_id(settings: EtcdSettings) -> str:
    """Which store a remembered revision belongs to: its endpoints, sorted
    (another store is another history; another order is the same store)."""
    return ",".join(sorted(settings.endpoints))


def start_revision(memory: Mapping[str, Any], store: str) -> int | None:
    """The revision to watch from: the one after the last seen; None when
    nothing is remembered for ``store`` (the pass then takes a baseline)."""
    revision = memory.get("revision")
    if memory.get("store") != store or isinstance(revision, bool):
        return None
    if not isinstance(revision, int) or revision < 1:
        return None
    return revision + 1


def cluster_of(client: EtcdClient) -> dict[str, str]:
    """Which cluster (and member of it) answered ``client`` last, to remember."""
    return {"cluster_id": client.cluster_id, "member_id": client.member_id}


def another_cluster(memory: Mapping[str, Any], cluster: Mapping[str, str]) -> str | None:
    """Why the store answering now is not the one remembered (a new cluster at
    the same endpoints, whose history is another one), or None. Only the
    cluster id counts: another member of the same cluster (a failover) has
    the same history. A memory from before ids were kept matches any."""
    before, now = memory.get("cluster_id"), cluster.get("cluster_id")
    if not before or not now or before == now:
        return None
    return f"another etcd cluster answers at the endpoints (cluster id {now}, was {before})"


def on_baseline(
    memory: Mapping[str, Any],
    services: Mapping[str, Any],
    store: str,
    revision: int,
    cluster: Mapping[str, str] | None = None,
) -> Pass:
    """The first look (or the first at this store): remember ``revision``, fire nothing
    (but ``reachable`` when etcd had been unreachable)."""
    events, infos = _back(memory, services)
    remembered = _remember(memory, store=store, revision=revision, **dict(cluster or {}))
    return Pass(events, remembered, infos=infos)


def on_watch(
    memory: Mapping[str, Any],
    services: Mapping[str, Mapping[str, str]],
    store: str,
    result: WatchResult,
    cluster: Mapping[str, str] | None = None,
    why: str | None = None,
) -> Pass:
    """One ``changed`` event per service with a changed prefix; every service
    when the changes are not known: the history was compacted away, or
    another cluster answers (``cluster``, against the remembered one), or
    ``why`` (etcd's watch failed; ``result`` is then the store's revision,
    marked compacted)."""
    replaced = another_cluster(memory, cluster or {})
    if replaced and not result.compacted:
        every = frozenset(p for files in services.values() for p in files.values())
        result = WatchResult(result.revision, every, {}, compacted=True)
    events, infos = _back(memory, services)
    warnings: list[str] = []
    for service, files in sorted(services.items()):
        if result.compacted:
            events.append(_changed(service, sorted(files), [], result.revision, compacted=True))
            continue
        changed_files = sorted(f for f, prefix in files.items() if prefix in result.changed)
        if changed_files:
            keys = sorted({k for p in set(files.values()) for k in result.keys.get(p, ())})
            events.append(_changed(service, changed_files, keys, result.revision))
    if result.compacted:
        reason = (
            why
            or replaced
            or (
                f"etcd no longer has the changes since revision {memory.get('revision')} "
                "(compacted, or the store went back)"
            )
        )
        line = (
            f"dockerops_etcd beacon: {reason}: every watched service is reported changed; "
            f"watching from revision {result.revision} on"
        )
        (warnings if why or replaced else infos).append(line)
    remembered = _remember(memory, store=store, revision=result.revision, **dict(cluster or {}))
    return Pass(events, remembered, warnings=warnings, infos=infos)


def on_error(memory: Mapping[str, Any], services: Iterable[str], err: EtcdError) -> Pass:
    """etcd could not be read: ``unreachable`` and a warning once, when it
    stops answering; the remembered revision is kept."""
    if memory.get("unreachable"):
        return Pass([], dict(memory))
    events = [
        {
            "tag": f"{service}/unreachable",
            "event": "unreachable",
            "service": service,
            "kind": err.kind,
            "reason": str(err),
        }
        for service in sorted(services)
    ]
    warning = f"dockerops_etcd beacon: {err}; changes are reported once etcd answers again"
    return Pass(events, {**memory, "unreachable": True}, warnings=[warning])


def on_problems(memory: Mapping[str, Any], problems: list[str]) -> Pass:
    """Services skipped (bad pillar): a warning each time the list changes."""
    before = memory.get("skipped") or []
    warnings = [f"dockerops_etcd beacon: {p}" for p in problems if p not in before]
    return Pass([], {**memory, "skipped": list(problems)}, warnings=warnings)


def _back(
    memory: Mapping[str, Any], services: Iterable[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    if not memory.get("unreachable"):
        return [], []
    events = [
        {"tag": f"{service}/reachable", "event": "reachable", "service": service}
        for service in sorted(services)
    ]
    return events, ["dockerops_etcd beacon: etcd answers again"]


def _remember(memory: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    return {**memory, **changes, "unreachable": False}


def _changed(
    service: str, files: list[str], keys: list[str], revision: int, compacted: bool = False
) -> dict[str, Any]:
    return {
        "tag": f"{service}/changed",
        "event": "changed",
        "service": service,
        "files": files,
        "keys": keys[:MAX_KEYS],
        "keys_total": len(keys),
        "revision": revision,
        "compacted": compacted,
    }


def look(
    pillar: Mapping[str, Any],
    memory: Mapping[str, Any],
    wait: float = DEFAULT_WAIT,
    only: Iterable[str] | None = None,
    budget: float | None = None,
) -> Pass:
    """One pass of the beacon: the services' prefixes watched from the
    remembered revision (see the module's documentation).

    ``budget``: seconds the pass may take (:func:`pass_budget`); its
    requests then connect within ``min(timeout, 2 s)`` each, and all end by
    then. None: each request is bounded by the settings' timeout alone."""
    deadline = None if budget is None else time.monotonic() + budget
    services, problems = etcd_services(pillar, only)
    if not services:
        return on_problems(memory, problems)
    try:
        settings = load_root(pillar).etcd
        if deadline is None:
            client = EtcdClient(settings)
        else:
            connect = min(settings.timeout, CONNECT_TIMEOUT)
            client = EtcdClient(settings, connect_timeout=connect, deadline=deadline)
    except SpecError as err:
        # No store to watch (no endpoints, a TLS file missing): said once.
        return on_problems(memory, [*problems, *err.problems])
    noted = on_problems(memory, problems)
    store = store_id(settings)
    start = start_revision(noted.memory, store)
    prefixes = sorted({p for files in services.values() for p in files.values()})
    why = None
    try:
        if start is None:
            revision = client.current_revision()
            found = on_baseline(noted.memory, services, store, revision, cluster_of(client))
            return _merge(noted, found)
        try:
            result = client.watch(prefixes, start, wait)
        except EtcdError as err:
            if err.kind != BAD_ANSWER:
                raise
            # The watch cannot go on from the remembered revision (an answer
            # over the size cap would come again at every pass): take the
            # store's revision now, and say every service changed.
            why = f"the watch failed ({err})"
            result = WatchResult(client.current_revision(), frozenset(prefixes), {}, True)
    except EtcdError as err:
        return _merge(noted, on_error(noted.memory, services, err))
    found = on_watch(noted.memory, services, store, result, cluster_of(client), why)
    return _merge(noted, found)


def _merge(first: Pass, then: Pass) -> Pass:
    return Pass(
        [*first.events, *then.events],
        then.memory,
        [*first.warnings, *then.warnings],
        [*first.infos, *then.infos],
    )


class EtcdBeaconMemory:
    """What the beacon saw last, in ``<state dir>/beacon/dockerops_etcd.json``
    (replaced atomically): the store and its revision, whether it answered."""

    def __init__(self, base: str | Path) -> None:
        self.path = Path(base) / "beacon" / "dockerops_etcd.json"

    def load(self) -> dict[str, Any]:
        return read_mapping(self.path)

    def save(self, memory: Mapping[str, Any]) -> None:
        """StateDirError when it cannot be written (the beacon logs it)."""
        save_json("the etcd beacon's memory", self.path, dict(memory))
