"""
Fire an event when a dockerops replica changes condition, once per change.

Events, tagged ``salt/beacon/<minion>/dockerops/<service>/<what>``:
``unhealthy``, ``recovered``, ``crash_loop``, ``gave_up``, ``oom_killed`` and
``port_missing`` (a port from the service's ``expect_ports`` it listened on is
gone). Each names the service, the replica (its slot), the container, the
environment, the image:tag, and a one-line reason.

The beacon remembers what it saw in the state dir (minion option
``dockerops.state_dir``), so a minion restart fires nothing twice. Each
interval it also writes the Prometheus metrics file (minion option
``dockerops.metrics_file``) when that file's directory exists.

Configure it like any beacon, in pillar or the minion config:

.. code-block:: yaml

    beacons:
      dockerops:
        - interval: 10
        # Optional: only these services (default: every dockerops service here).
        - services: [web, api]
"""

import logging
import time

import salt.utils.beacons

try:
    import dockerops as _lib

    HAS_LIB = hasattr(_lib, "__path__")
    if HAS_LIB:
        from dockerops import client as _client
        from dockerops import host as _host
        from dockerops import metrics as _metrics
        from dockerops import netns as _netns
        from dockerops import records as _records
        from dockerops import spec as _spec
        from dockerops import status as _status
        from dockerops import watch as _watch
except ImportError:
    HAS_LIB = False

log = logging.getLogger(__name__)

__virtualname__ = "dockerops"

_MEMORY = "dockerops.beacon.seen"


def __virtual__():
    if not HAS_LIB:
        return (False, "dockerops: the dockerops library, docker and pydantic are required")
    return __virtualname__


def validate(config):
    """Check the beacon's configuration: a list of dicts (``interval``, ``services``)."""
    if not isinstance(config, list):
        return False, "Configuration for the dockerops beacon must be a list."
    merged = salt.utils.beacons.list_to_dict(config)
    services = merged.get("services")
    if services is not None:
        if not isinstance(services, list) or not services:
            return False, "dockerops beacon: services must be a list of service names."
        for name in services:
            try:
                _spec.check_service_name(name)
            except Exception as err:  # pylint: disable=broad-except
                return False, f"dockerops beacon: services: {err}"
    return True, "Valid beacon configuration"


def _pillar():
    return __opts__.get("pillar") or {}


def _expected_ports(host, services):
    """Container name -> (expected ports listening, expected ports missing), for
    the services that declare ``expect_ports``."""
    out = {}
    pillar = _pillar()
    for name in services:
        try:
            spec = _spec.load_service(pillar, name, allow_privileged=True)
        except Exception:  # pylint: disable=broad-except
            continue  # not declared here, or invalid pillar: nothing to compare with
        expected = list(getattr(spec, "expect_ports", None) or [])
        if not expected:
            continue
        for container, ports in _netns.listening_by_replica(host, name).items():
            if ports is None:
                continue  # not running or unreadable: its other events say so
            missing = _netns.missing_expected(expected, ports)
            out[container] = ([p for p in expected if p not in missing], missing)
    return out


def beacon(config):
    """
    One look at every dockerops replica on this minion: the events for what
    changed since the last look (see the module's documentation).

    Example config:

    .. code-block:: yaml

        beacons:
          dockerops:
            - interval: 10
    """
    merged = salt.utils.beacons.list_to_dict(config)
    only = merged.get("services")
    state_dir = _records.state_dir(__opts__)
    clients = {}
    try:
        host = _host.minion_host(__opts__, clients)
        try:
            policy = _status.crash_loop_policy(_pillar())
        except _spec.SpecError as err:
            log.warning("dockerops beacon: %s; using the default crash-loop policy", err)
            policy = None
        every = _status.replica_status(host, None, state_dir, policy)
        rows = {name: found for name, found in every.items() if not only or name in only}
        listening = _expected_ports(host, sorted(rows))
        path = _metrics.metrics_file(__opts__)
        if path:
            try:
                # The rows just read: no second inspect of every container.
                _metrics.write_metrics(host, path, state_dir, _pillar(), rows=every)
            except Exception as err:  # pylint: disable=broad-except
                log.warning("dockerops beacon: metrics not written: %s", err)
    except Exception as err:  # pylint: disable=broad-except
        # Docker down or restarting: nothing to compare; the next look will.
        log.warning("dockerops beacon: %s", err)
        return []
    finally:
        _client.close_clients(clients)

    memory = _watch.BeaconMemory(state_dir)
    previous = __context__.get(_MEMORY)
    if previous is None:
        previous = memory.load()
    # Keep what is remembered of the services this beacon does not watch.
    kept = {k: v for k, v in previous.items() if only and k.split("/", 1)[0] not in only}
    events, seen = _watch.replica_events(previous, rows, listening)
    seen = {**kept, **seen}
    __context__[_MEMORY] = seen
    if seen != previous:
        try:
            memory.save(seen)
        except Exception as err:  # pylint: disable=broad-except
            # Kept in memory: this minion process fires nothing twice anyway.
            log.warning("dockerops beacon: %s", err)
    for event in events:
        event["time"] = time.time()
    return events
