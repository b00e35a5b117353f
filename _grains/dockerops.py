"""
Grains about this minion's Docker host: ``dockerops:docker`` (daemon version,
reachable, storage driver, cgroup version) and ``dockerops:services`` (per
service with containers here: the image:tag it runs, how many replicas run,
and, once one succeeded, ``last_backup``: when its last successful backup
started, Unix time), so that ``salt -G 'dockerops:services:web:*' ...`` targets the minions
running ``web``. Docker down never fails the minion: ``reachable: False``.
"""

import logging

try:
    import dockerops as _lib

    HAS_LIB = hasattr(_lib, "__path__")
    if HAS_LIB:
        from dockerops import client as _client
        from dockerops import host as _host
        from dockerops import records as _records
        from dockerops import schedules as _schedules
        from dockerops import status as _status
except ImportError:
    HAS_LIB = False

log = logging.getLogger(__name__)

__virtualname__ = "dockerops"

# Grains are computed at minion start and on every refresh: never hang on an
# unresponsive daemon.
GRAINS_TIMEOUT = 3


def __virtual__():
    if not HAS_LIB:
        return (False, "dockerops: the dockerops library, docker and pydantic are required")
    return __virtualname__


def dockerops():
    """Return the ``dockerops`` grain."""
    opts = dict(__opts__)
    opts["dockerops.docker_timeout"] = GRAINS_TIMEOUT
    grain = {"version": _lib.__version__, "docker": {"url": _client.docker_url(opts)}}
    # Grains refresh in the minion's main process: close the client after reading.
    clients = {}
    try:
        host = _host.minion_host(opts, clients)
        with _client.translate_errors("reading grains"):
            info = host.api.info()
        grain["docker"].update(
            {
                "version": info.get("ServerVersion"),
                "storage_driver": info.get("Driver"),
                "cgroup_version": info.get("CgroupVersion"),
                "cgroup_driver": info.get("CgroupDriver"),
            }
        )
        grain["docker"]["reachable"] = True
        grain["services"] = _status.services_grain(host.managed())
        state_dir = _records.state_dir(opts)
        for service, entry in grain["services"].items():
            last_backup = _schedules.last_backup_time(state_dir, service)
            if last_backup is not None:
                entry["last_backup"] = last_backup
    except Exception as err:  # pylint: disable=broad-except
        # A grain must not break the minion: report, don't raise.
        log.warning("dockerops grains: %s", err)
        grain["docker"]["reachable"] = False
        grain["services"] = {}
    finally:
        _client.close_clients(clients)
    return {"dockerops": grain}
