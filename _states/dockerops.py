"""
Keep Docker services from pillar running on this minion.

.. code-block:: yaml

    dockerops-service-web-running:
      dockerops.running:
        - name: web

    dockerops-service-old-absent:
      dockerops.absent:
        - name: old
"""

try:
    import dockerops as _lib

    HAS_LIB = hasattr(_lib, "__path__")
    if HAS_LIB:
        from dockerops import converge as _converge
        from dockerops import host as _host
        from dockerops import spec as _spec
except ImportError:
    HAS_LIB = False

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "dockerops"


def __virtual__():
    if not HAS_LIB:
        return (False, "dockerops: the dockerops library, docker and pydantic are required")
    return __virtualname__


def _shape(ret, result):
    ret["changes"] = result.changes
    ret["comment"] = result.comment
    ret["result"] = result.result
    return ret


def running(name, **overrides):
    """
    Ensure the replicas of service ``name`` run as pillar declares them.

    name
        The service, ``dockerops:services:<name>`` in pillar.

    overrides
        Any service field (``tag``, ``replicas``, ``env``...) given here is laid
        over the pillar declaration.

    Replicas missing are created, replicas whose inputs changed (image, command,
    env, ports, labels, restart policy) are recreated, extra replicas are removed;
    nothing else is touched.

    .. code-block:: yaml

        dockerops-service-web-running:
          dockerops.running:
            - name: web
            - tag: "1.1"
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    overrides = {k: v for k, v in overrides.items() if not k.startswith("__")}
    try:
        spec = _spec.load_service(__pillar__, name, overrides)
        result = _converge.converge(
            _host.minion_host(__opts__, __context__), spec, test=__opts__["test"]
        )
    except (CommandExecutionError, SaltInvocationError) as err:
        ret["result"] = False
        ret["comment"] = str(err)
        return ret
    return _shape(ret, result)


def absent(name):
    """
    Ensure no container of service ``name`` runs on this minion.

    .. code-block:: yaml

        dockerops-service-old-absent:
          dockerops.absent:
            - name: old
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    try:
        result = _converge.remove_service(
            _host.minion_host(__opts__, __context__), name, test=__opts__["test"]
        )
    except (CommandExecutionError, SaltInvocationError) as err:
        ret["result"] = False
        ret["comment"] = str(err)
        return ret
    _shape(ret, result)
    if not result.actions:
        ret["comment"] = f"Service {name} has no containers on this host"
    return ret
