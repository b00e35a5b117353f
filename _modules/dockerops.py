"""
Run Docker services declared in pillar (``dockerops:services``).

The minion option ``dockerops.docker_url`` names the Docker daemon this minion
manages (default ``unix:///var/run/docker.sock``). The work is done by the
``dockerops`` Python library, installed with pip/salt-pip or synced from
``salt://_utils`` with ``saltutil.sync_all``.
"""

import logging

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import dockerops as _lib

    # Guard against this very file being found as "dockerops" on sys.path.
    HAS_LIB = hasattr(_lib, "__path__")
    if HAS_LIB:
        from dockerops import client as _client
        from dockerops import converge as _converge
        from dockerops import host as _host
        from dockerops import records as _records
        from dockerops import render as _render
        from dockerops import spec as _spec
        from dockerops import status as _status
    IMPORT_ERROR = "" if HAS_LIB else "the dockerops library is not installed"
except ImportError as err:  # docker-py or pydantic missing
    HAS_LIB = False
    IMPORT_ERROR = str(err)

log = logging.getLogger(__name__)

__virtualname__ = "dockerops"


def __virtual__():
    if not HAS_LIB:
        return (
            False,
            f"dockerops: {IMPORT_ERROR} (needs the Python packages docker and pydantic: "
            "salt-pip install docker pydantic, and the dockerops library: "
            "saltutil.sync_all or salt-pip install dockerops)",
        )
    return __virtualname__


def _docker():
    return _host.minion_host(__opts__, __context__)


def _test(test):
    return bool(__opts__.get("test", False) if test is None else test)


def version():
    """
    Return the dockerops library version and the Docker daemon's version.

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.version
    """
    host = _docker()
    with _client.translate_errors("asking the Docker daemon for its version"):
        server = host.client.version()
    return {
        "dockerops": _lib.__version__,
        "docker": server.get("Version"),
        "api": server.get("ApiVersion"),
        "docker_url": _client.docker_url(__opts__),
    }


def services():
    """
    Compare every pillar service with what runs on this host.

    Per service: image, desired and running replica counts, whether it is in
    sync and the actions a state run would take. Containers of services no
    longer in pillar are listed with ``orphaned: True``.

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.services
    """
    specs = _spec.load_services(__pillar__)
    versions = {}
    for spec in specs:
        rendered = _render.render_service_config(spec, __salt__)
        versions[spec.name] = rendered.version if rendered else None
    return _status.services_overview(_docker(), specs, versions)


def status(name=None):
    """
    Per replica: container, image, state, health, restart count, config version.

    name
        Only this service. Default: every dockerops container on this host.

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.status
        salt '*' dockerops.status web
    """
    return _status.replica_status(_docker(), name, _records.state_dir(__opts__))


def apply(name=None, test=None):
    """
    Converge this host to pillar, like the ``dockerops.running`` state.

    name
        Only this service. Default: every service in ``dockerops:services``.

    test
        Report what would change and touch nothing. Default: the minion's
        ``test`` option.

    Returns per service its result, comment and changes; the exit code is
    non-zero when any service failed.

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.apply
        salt '*' dockerops.apply web test=True
    """
    specs = [_spec.load_service(__pillar__, name)] if name else _spec.load_services(__pillar__)
    host = _docker()
    out = {}
    for spec in specs:
        # One service's failure (bad template, daemon error) does not stop the others.
        try:
            rendered = _render.render_service_config(spec, __salt__)
            result = _converge.converge(
                host, spec, rendered, state_dir=_records.state_dir(__opts__), test=_test(test)
            )
            out[spec.name] = {
                "result": result.result,
                "comment": result.comment,
                "changes": result.changes,
            }
        except (CommandExecutionError, SaltInvocationError) as err:
            out[spec.name] = {"result": False, "comment": str(err), "changes": {}}
        if out[spec.name]["result"] is False:
            __context__["retcode"] = 1
    return out


def restart(name, rolling=True, test=None):
    """
    Restart a service's replicas on this host, as its ``config:on_change`` says.

    name
        The service (from pillar).

    rolling
        One replica at a time, each waiting to be healthy before the next
        (default). ``rolling=False`` restarts all at once. Services with
        ``on_change: signal:SIG`` get the signal instead; ``none`` does nothing.

    test
        Report what would be restarted and touch nothing.

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.restart web
        salt '*' dockerops.restart web rolling=False
    """
    spec = _spec.load_service(__pillar__, name)
    result = _converge.restart_service(_docker(), spec, rolling=rolling, test=_test(test))
    if result.result is False:
        __context__["retcode"] = 1
    return {"result": result.result, "comment": result.comment, "changes": result.changes}


def remove(name, test=None):
    """
    Remove every container of a service from this host (pillar is not read).

    name
        The service.

    test
        Report what would be removed and touch nothing.

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.remove web
    """
    result = _converge.remove_service(_docker(), name, test=_test(test))
    if result.result is False:
        __context__["retcode"] = 1
    return {"result": result.result, "comment": result.comment, "changes": result.changes}
