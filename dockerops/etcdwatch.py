"""What the ``dockerops_etcd`` beacon reports: services whose config keys changed in etcd.

Each pass watches, with etcd's own watch (not by reading the keys again), the
prefixes that the services' config files come from (``config:files:<name>:etcd``),
from the revision after the one the last pass saw, for a short bounded time.
It remembers that revision in the state dir (``<state dir>/beacon/dockerops_etcd.json``),
so a minion restart neither misses a change nor reports one twice.

Events, tagged ``<service>/<what>`` (Salt prefixes
``salt/beacon/<minion>/dockerops_etcd/``):

- ``changed``: a key under one of the service's prefixes was put or deleted
  since the last pass; one event per service per pass, however many keys
  changed (``keys``: the first :data:`MAX_KEYS` of them, ``keys_total``: how
  many); when etcd compacted the history since the last pass, or the store
  went back (restored), every watched service gets one, with ``compacted``;
- ``unreachable``: etcd could not be read (once, when it stops answering;
  the revision is kept, so the changes made meanwhile are reported after);
- ``reachable``: etcd answers again (once).

The first pass only notes the store's revision (the states rendered the
files from the store as it was): it fires nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SpecError
from .etcd import EtcdClient, EtcdError, WatchResult
from .records import read_mapping, save_json
from .spec import PILLAR_KEY, EtcdSettings, deep_merge, load_root, load_service

# Keys named in one changed event (the rest are counted in keys_total).
MAX_KEYS = 50
# How long each pass waits for etcd to send the changes since the last one
# (etcd's watch catches up on past revisions about every 100 ms).
DEFAULT_WAIT = 0.3
MAX_WAIT = 5.0


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


def on_baseline(
    memory: Mapping[str, Any], services: Mapping[str, Any], store: str, revision: int
) -> Pass:
    """The first look (or the first at this store): remember ``revision``, fire nothing
    (but ``reachable`` when etcd had been unreachable)."""
    events, infos = _back(memory, services)
    return Pass(events, _remember(memory, store=store, revision=revision), infos=infos)


def on_watch(
    memory: Mapping[str, Any],
    services: Mapping[str, Mapping[str, str]],
    store: str,
    result: WatchResult,
) -> Pass:
    """One ``changed`` event per service with a changed prefix; every service
    when the history was compacted away."""
    events, infos = _back(memory, services)
    for service, files in sorted(services.items()):
        if result.compacted:
            events.append(_changed(service, sorted(files), [], result.revision, compacted=True))
            continue
        changed_files = sorted(f for f, prefix in files.items() if prefix in result.changed)
        if changed_files:
            keys = sorted({k for p in set(files.values()) for k in result.keys.get(p, ())})
            events.append(_changed(service, changed_files, keys, result.revision))
    if result.compacted:
        infos.append(
            f"dockerops_etcd beacon: etcd no longer has the changes since revision "
            f"{memory.get('revision')} (compacted, or the store went back): every watched "
            f"service is reported changed; watching from revision {result.revision} on"
        )
    return Pass(events, _remember(memory, store=store, revision=result.revision), infos=infos)


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
) -> Pass:
    """One pass of the beacon: the services' prefixes watched from the
    remembered revision (see the module's documentation)."""
    services, problems = etcd_services(pillar, only)
    if not services:
        return on_problems(memory, problems)
    try:
        settings = load_root(pillar).etcd
        client = EtcdClient(settings)
    except SpecError as err:
        # No store to watch (no endpoints, a TLS file missing): said once.
        return on_problems(memory, [*problems, *err.problems])
    noted = on_problems(memory, problems)
    store = store_id(settings)
    start = start_revision(noted.memory, store)
    prefixes = sorted({p for files in services.values() for p in files.values()})
    try:
        if start is None:
            return _merge(
                noted, on_baseline(noted.memory, services, store, client.current_revision())
            )
        result = client.watch(prefixes, start, wait)
    except EtcdError as err:
        return _merge(noted, on_error(noted.memory, services, err))
    return _merge(noted, on_watch(noted.memory, services, store, result))


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
