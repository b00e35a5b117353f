"""
Grains about this minion's Docker host: ``dockerops:docker`` (daemon version,
reachable) and ``dockerops:services`` (services with containers here).
"""

import logging

try:
    import dockerops as _lib

    HAS_LIB = hasattr(_lib, "__path__")
    if HAS_LIB:
        from dockerops import client as _client
        from dockerops import host as _host
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
            grain["docker"]["version"] = host.client.version().get("Version")
        grain["docker"]["reachable"] = True
        grain["services"] = sorted({c.service for c in host.managed()})
    except Exception as err:  # pylint: disable=broad-except
        # A grain must not break the minion: report, don't raise.
        log.warning("dockerops grains: %s", err)
        grain["docker"]["reachable"] = False
        grain["services"] = []
    finally:
        _client.close_clients(clients)
    return {"dockerops": grain}
