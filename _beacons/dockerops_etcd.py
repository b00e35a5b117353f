"""
Fire an event when the etcd keys a dockerops service's config files come from change.

Events, tagged ``salt/beacon/<minion>/dockerops_etcd/<service>/<what>``:
``changed`` (once per service per interval, however many keys changed: the
service, its files from etcd that changed, the keys, the revision),
``unreachable`` and ``reachable`` (once each, when etcd stops and starts
answering). The reactor ``salt://reactor/dockerops_etcd.sls`` applies the
service's states on ``changed``: its config is rendered from the store again.

Services are those with ``config:files:<name>:etcd`` in pillar, read with
``dockerops:etcd``'s settings. The beacon watches their prefixes with etcd's
watch from the revision it saw last, remembered (with the etcd cluster's id)
in the state dir (minion option ``dockerops.state_dir``), so a minion restart
goes on from where the last pass stopped. The first pass only notes the
revision. A change is reported at most once per revision; the memory is saved
before Salt fires the events the beacon returns (and its directory is not
fsynced), so a crash or power cut between the save and the fire can drop one
pass's events. When the changes since the last pass cannot be known (etcd
compacted them, the store went back or was replaced by another cluster, or
the watch answered something unusable), every watched service gets a
``changed`` event with ``compacted: True``.

Beacons run on the minion's main loop, so a pass is bounded: it takes at most
``max(interval / 2, wait + 2)`` seconds (``interval`` defaulting to the
minion's ``loop_interval``), plus the time to read pillar and save its memory;
each endpoint gets at most ``min(timeout, 2)`` seconds to connect. A pass
that runs out of time counts as etcd ``unreachable`` (kind ``timeout``).

.. code-block:: yaml

    beacons:
      dockerops_etcd:
        - interval: 10
        # Optional: only these services (default: every service with etcd files).
        - services: [web, api]
        # Optional: seconds each pass waits for etcd's answer (default 0.3, at most 5).
        - wait: 0.3
"""

import logging
import time

import salt.utils.beacons

try:
    import dockerops as _lib

    HAS_LIB = hasattr(_lib, "__path__")
    if HAS_LIB:
        from dockerops import etcdwatch as _etcdwatch
        from dockerops import records as _records
        from dockerops import spec as _spec
except ImportError:
    HAS_LIB = False

log = logging.getLogger(__name__)

__virtualname__ = "dockerops_etcd"

_MEMORY = "dockerops_etcd.beacon.seen"


def __virtual__():
    if not HAS_LIB:
        return (False, "dockerops_etcd: the dockerops library and pydantic are required")
    return __virtualname__


def validate(config):
    """Check the beacon's configuration: a list of dicts (``interval``, ``services``, ``wait``)."""
    if not isinstance(config, list):
        return False, "Configuration for the dockerops_etcd beacon must be a list."
    merged = salt.utils.beacons.list_to_dict(config)
    services = merged.get("services")
    if services is not None:
        if not isinstance(services, list) or not services:
            return False, "dockerops_etcd beacon: services must be a list of service names."
        for name in services:
            try:
                _spec.check_service_name(name)
            except Exception as err:  # pylint: disable=broad-except
                return False, f"dockerops_etcd beacon: services: {err}"
    wait = merged.get("wait", _etcdwatch.DEFAULT_WAIT)
    if (
        isinstance(wait, bool)
        or not isinstance(wait, (int, float))
        or not 0 < wait <= _etcdwatch.MAX_WAIT
    ):
        return False, (
            f"dockerops_etcd beacon: wait must be a number of seconds, more than 0 "
            f"and at most {_etcdwatch.MAX_WAIT:g}"
        )
    return True, "Valid beacon configuration"


def beacon(config):
    """
    One look at etcd: a ``changed`` event per service whose keys changed since
    the last look (see the module's documentation). It takes at most
    ``max(interval / 2, wait + 2)`` seconds (plus reading pillar and saving
    the beacon's memory), however many endpoints do not answer.

    Example config:

    .. code-block:: yaml

        beacons:
          dockerops_etcd:
            - interval: 10
    """
    merged = salt.utils.beacons.list_to_dict(config)
    state_dir = _records.state_dir(__opts__)
    memory = _etcdwatch.EtcdBeaconMemory(state_dir)
    previous = __context__.get(_MEMORY)
    if previous is None:
        previous = memory.load()
    wait = float(merged.get("wait", _etcdwatch.DEFAULT_WAIT))
    interval = merged.get("interval") or __opts__.get("loop_interval") or 1
    if isinstance(interval, bool) or not isinstance(interval, (int, float)):
        interval = 1  # Salt checks the interval itself; a pass stays bounded anyway
    found = _etcdwatch.look(
        __opts__.get("pillar") or {},
        previous,
        wait=wait,
        only=merged.get("services"),
        budget=_etcdwatch.pass_budget(float(interval), wait),
    )
    for line in found.warnings:
        log.warning("%s", line)
    for line in found.infos:
        log.info("%s", line)
    __context__[_MEMORY] = found.memory
    if found.memory != previous:
        try:
            memory.save(found.memory)
        except Exception as err:  # pylint: disable=broad-except
            # Kept in memory: this minion process fires nothing twice anyway.
            log.warning("dockerops_etcd beacon: %s", err)
    for event in found.events:
        event["time"] = time.time()
    return found.events
