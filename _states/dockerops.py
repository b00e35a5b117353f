"""
Keep Docker services from pillar running on this minion.

.. code-block:: yaml

    dockerops-service-web-config-managed:
      dockerops.config_managed:
        - name: web

    dockerops-service-web-running:
      dockerops.running:
        - name: web
        - require:
          - dockerops: dockerops-service-web-config-managed
        - watch:
          - file: /srv/dockerops/web/extra.pem

    dockerops-service-old-absent:
      dockerops.absent:
        - name: old
"""

import functools
import logging
import sys

import salt.state

try:
    import dockerops as _lib

    HAS_LIB = hasattr(_lib, "__path__")
    if HAS_LIB:
        from dockerops import client as _client
        from dockerops import config as _config
        from dockerops import configcheck as _configcheck
        from dockerops import configmode as _configmode
        from dockerops import converge as _converge
        from dockerops import events as _events
        from dockerops import host as _host
        from dockerops import lock as _lock
        from dockerops import metrics as _metrics
        from dockerops import monitoring as _monitoring
        from dockerops import records as _records
        from dockerops import render as _render
        from dockerops import spec as _spec
        from dockerops import status as _status
except ImportError:
    HAS_LIB = False

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "dockerops"


def __virtual__():
    if not HAS_LIB:
        return (False, "dockerops: the dockerops library, docker and pydantic are required")
    return __virtualname__


def _privileged():
    """Whether this minion lets pillar ask for privileged containers: the
    minion option ``dockerops.allow_privileged`` (pillar alone cannot)."""
    return bool(__opts__.get("dockerops.allow_privileged", False))


def _closes_clients(func):
    """Close the Docker clients a state opened when it ends.

    Salt offers no hook at the end of a state run, and a state run's
    ``__context__`` is dropped with its connections still open; a state run
    forked for ``parallel: True`` must not share pooled connections either.
    The next state builds a new client, which costs no request.
    """

    @functools.wraps(func)
    def state(*args, **kwargs):
        in_run = _scope_reads()
        try:
            return func(*args, **kwargs)
        finally:
            _client.close_clients(__context__)
            if not in_run:
                _client.forget_reads(__context__)

    return state


def _scope_reads():
    """Let what this state run read from the daemon (the host's container
    list, image inspects: :func:`dockerops.client.kept_reads`) serve only its
    own states; whether this state is part of a state run.

    A state called outside a state run (no ``State`` object) reads afresh. A
    state of another run than the one that kept them drops them. Reads no run
    claimed yet (the formula's render-time ``dockerops.first_deploys``, made
    before the first state) are this run's.
    """
    owner, _frame = _state_run()
    run = owner.instance_id if owner is not None else None
    reads = _client.kept_reads(__context__)
    if run is None or reads.get("run", run) != run:
        reads.clear()
    if run is not None:
        reads["run"] = run
    return run is not None


def _jid():
    """The job id of the running state run, for the rollout history.

    Salt passes state functions no ``__pub_jid``; the ``State`` object that calls
    them holds the job's id (:func:`_state_run` finds it).
    """
    owner, _frame = _state_run()
    return (owner.jid if owner is not None else None) or __opts__.get("jid")


# Replica counts this run's states declared (overrides included): the metrics' desired counts.
_DESIRED_KEY = "dockerops.metrics.desired"


def _state_run():
    """This state run's ``State`` object and the ``call_chunk`` frame running
    this state, or ``(None, None)`` when not found (another caller)."""
    instance = globals().get("__instance_id__")
    frame = sys._getframe(1)
    while instance and frame is not None:
        # Only State objects are asked: getattr on others (a LazyLoader) may load modules.
        owner = frame.f_locals.get("self")
        if (
            frame.f_code.co_name == "call_chunk"
            and isinstance(owner, salt.state.State)
            and owner.instance_id == instance
        ):
            return owner, frame
        frame = frame.f_back
    return None, None


def _in_parallel_process():
    """Whether this state runs in a process of its own (``parallel: True``):
    Salt's ``_call_parallel_target`` is on the stack of that process."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_call_parallel_target":
            return True
        frame = frame.f_back
    return False


def _last_dockerops_state(frame):
    """Whether no other ``dockerops.running``/``absent`` state of this run is
    still to run, from the run's ``call_chunk`` frame (:func:`_state_run`).

    The metrics file is written once per state run, after its last dockerops
    state; Salt has no hook at a run's end. ``call_chunk`` holds the run's
    chunks and those done (a ``parallel`` one counts as done once started);
    when it cannot be found (another caller), every state writes.
    """
    if frame is None:
        return True
    low = frame.f_locals.get("low") or {}
    this = (low.get("__id__"), low.get("name"))
    done = frame.f_locals.get("running") or {}
    for chunk in frame.f_locals.get("chunks") or ():
        if (
            chunk.get("state") == __virtualname__
            and chunk.get("fun") in ("running", "absent")
            and (chunk.get("__id__"), chunk.get("name")) != this
            and salt.state._gen_tag(chunk) not in done
        ):
            return False
    return True


def _wait_parallel_states(owner):
    """Wait for this run's dockerops states running in their own processes
    (``parallel: True``, :func:`dockerops.first_deploys`): the metrics must
    show what they did. Each ends on its own (its health waits are bounded);
    one Salt has not started yet (``state_max_parallel``) is not waited for."""
    if owner is None:
        return False
    waited = False
    while True:
        alive = [
            parallel
            for parallel in list(getattr(owner, "procs", {}).values())
            if (getattr(parallel, "low", None) or {}).get("state") == __virtualname__
            and getattr(parallel, "proc", None) is not None
            and parallel.proc.is_alive()
        ]
        if not alive:
            return waited
        waited = True
        alive[0].proc.join(0.1)


def _write_metrics():
    """Write the metrics file (``dockerops.metrics_file``); never fails the state."""
    if __opts__["test"] or _in_parallel_process():
        return
    owner, frame = _state_run()
    if not _last_dockerops_state(frame):
        return
    try:
        path = _metrics.metrics_file(__opts__)
        if path is None:
            return
        if _wait_parallel_states(owner):
            # They changed containers in other processes: this one's list is old.
            _client.forget_reads(__context__)
        host = _host.minion_host(__opts__, __context__)
        state_dir = _records.state_dir(__opts__)
        known = __context__.get(_DESIRED_KEY)
        if not _metrics.write_metrics(host, path, state_dir, __pillar__, known, _privileged()):
            log.debug("dockerops: no metrics written: the directory of %s does not exist", path)
    except Exception as err:  # pylint: disable=broad-except
        # Metrics are a side job: a failure there never fails the service's state.
        log.warning("dockerops: could not write the metrics file: %s", err)


def _writes_metrics(func):
    """Write the metrics after the state (see :func:`_write_metrics`)."""

    @functools.wraps(func)
    def state(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        finally:
            _write_metrics()

    return state


def _touched_key(name):
    return f"dockerops.touched.{name}"


def _config_key(name):
    return f"dockerops.config_reported.{name}"


def _rendered(spec):
    """The service's rendered config, once per state run (config_managed and
    running both need it; jinja rendering is the costly part of a no-op run)."""
    if spec.config is None:
        return None
    key = f"dockerops.rendered.{spec.name}"
    fingerprint = (spec.config.model_dump_json(), __env__)
    cached = __context__.get(key)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    etcd = _root().etcd if spec.etcd_files else None
    rendered = _render.render_service_config(spec, __salt__, __env__, etcd)
    __context__[key] = (fingerprint, rendered)
    return rendered


def _root():
    """``dockerops`` pillar's top-level settings (registries, etcd), validated."""
    return _spec.load_root(__pillar__)


def _docker_host():
    """The minion's Docker host, with pillar's registry credentials for pulls."""
    return _host.minion_host(__opts__, __context__, __pillar__)


def _to_run(spec, rendered):
    """What ``running`` converges to (:mod:`dockerops.configmode`): a config
    image is found or built once per state run (``config_managed`` and
    ``running`` both ask)."""
    if not _configmode.uses_image(spec) or rendered is None:
        return _configmode.Running(spec, rendered)
    key = f"dockerops.config_image.{spec.name}"
    fingerprint = (spec.image_ref, spec.env_short, rendered.version, bool(__opts__["test"]))
    cached = __context__.get(key)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    run = _configmode.running(
        _docker_host(),
        spec,
        rendered,
        _root().registries,
        _records.state_dir(__opts__),
        test=bool(__opts__["test"]),
    )
    __context__[key] = (fingerprint, run)
    return run


def _progress(service):
    """Fire ``dockerops/rollout/<service>/<stage>`` events as a rollout moves."""
    send = __salt__["event.send"] if _events.event_bus_listens(__opts__) else None
    return _events.event_progress(send, service)


def _spec_of(name, overrides):
    overrides = {k: v for k, v in overrides.items() if not k.startswith("__")}
    return _spec.load_service(__pillar__, name, overrides, allow_privileged=_privileged())


def _fail(ret, err):
    ret["result"] = False
    ret["comment"] = str(err)
    return ret


@_closes_clients
@_writes_metrics
def running(name, **overrides):
    """
    Ensure the replicas of service ``name`` run as pillar declares them.

    name
        The service, ``dockerops:services:<name>`` in pillar.

    overrides
        Any service field (``tag``, ``replicas``, ``env``...) given here is laid
        over the pillar declaration.

    Replicas missing are created; replicas whose inputs changed (image, command,
    env, secrets, ports, mounts, config version, logging, restart policy,
    healthcheck) are recreated one at a time, each waiting to be healthy, and
    put back as they were if one is not; extra replicas are removed. A config
    change follows the service's ``config:on_change``. Nothing else is touched.

    With ``watch``, a change in a watched state restarts the replicas per
    ``config:on_change`` (rolling, restart, signal, none), except those this
    run has just created.

    .. code-block:: yaml

        dockerops-service-web-running:
          dockerops.running:
            - name: web
            - tag: "1.1"
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    try:
        spec = _spec_of(name, overrides)
        __context__.setdefault(_DESIRED_KEY, {})[name] = spec.replicas
        run = _to_run(spec, _rendered(spec))
        rendered = run.rendered
        reported = rendered is not None and (__context__.get(_config_key(name)) == rendered.version)
        result = _converge.converge(
            _docker_host(),
            run.spec,
            rendered,
            state_dir=_records.state_dir(__opts__),
            test=__opts__["test"],
            config_reported=reported,
            progress=_progress(name),
            jid=_jid(),
            history_keep=_records.history_keep(__opts__),
        )
    except (CommandExecutionError, SaltInvocationError) as err:
        return _fail(ret, err)
    __context__.setdefault(_touched_key(name), set()).update(result.touched)
    ret["changes"] = result.changes
    ret["comment"] = result.comment
    ret["result"] = result.result
    # Where it answers now (a start-first rollout moves it to other host ports),
    # from the containers the run listed anyway.
    ports = _status.service_ports(result.listed) if result.result is True else []
    if ports:
        ret["comment"] += "\nports: " + ", ".join(ports)
    warning = _monitoring.restart_warning(spec.restart_policy)
    if warning:
        ret["warnings"] = [f"service {name}: {warning}"]
    # A logging driver that can block the container's writes (dockerops.logdrivers).
    log_warning = spec.logging.blocking_warning
    if log_warning:
        ret.setdefault("warnings", []).append(f"service {name}: {log_warning}")
    return ret


@_closes_clients
def config_managed(name, **overrides):
    """
    Render service ``name``'s config directory on the host (no container touched).

    Files from ``config:files`` are rendered (inline ``contents`` or a
    ``salt://`` ``source``, optionally a jinja ``template``) and written as an
    immutable version directory named by its content hash. With
    ``config:check``, the new version is first validated in a throwaway
    container of the service's image; a failing check fails the state with
    its output, and nothing else happens. ``..data`` then points at the
    version, except for ``signal:*`` services, whose replicas read ``..data``
    live: ``dockerops.running`` moves it and proves each replica's reload.
    Changes show each file's diff (masked for secrets, withheld for files
    with ``show_diff: false``). Old versions are pruned, keeping
    ``config:keep`` and every version a container still mounts.

    .. code-block:: yaml

        dockerops-service-web-config-managed:
          dockerops.config_managed:
            - name: web
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    try:
        spec = _spec_of(name, overrides)
        if spec.config is None:
            ret["comment"] = f"Service {name} has no config directory"
            return ret
        rendered = _rendered(spec)
        if _configmode.uses_image(spec):
            return _config_image_state(ret, spec, _to_run(spec, rendered).image)
        store = _config.ConfigStore.of(spec)
        current = store.current()
        # dockerops.running in this run need not report this version again.
        __context__[_config_key(name)] = rendered.version
        ret["changes"] = _configcheck.config_change(
            store,
            rendered,
            current,
            lambda: _converge.known_secrets(_host.minion_host(__opts__, __context__), spec),
        )
        if not ret["changes"]:
            ret["comment"] = f"Config of {name} is at version {current}"
            return ret
        host = _host.minion_host(__opts__, __context__)
        if __opts__["test"]:
            ret["result"] = None
            ret["comment"] = f"Config of {name} would move to version {rendered.version}"
            return ret
        # A signal service's replicas read ..data live: dockerops.running moves
        # it, signals and proves each reload, and moves it back if one fails.
        signal = spec.config.signal
        state_dir = _records.state_dir(__opts__)
        # The service's record and its config root are a rollout's too: one writer at a time.
        lock = _lock.RolloutLock(state_dir, name)
        with lock.held(_jid(), "config change"):
            if lock.previous is not None:
                ret["changes"]["recovered"] = [
                    f"lock left by pid {lock.previous.get('pid')} (job "
                    f"{lock.previous.get('jid')}), which died"
                ]
            steps = _configcheck.publish(
                host,
                spec,
                store,
                rendered,
                state_dir,
                _converge.known_secrets(host, spec),
                activate=signal is None,
                prune=True,
            )
    except _configcheck.ConfigCheckFailed as err:
        ret["changes"] = {}  # written, never activated
        return _fail(ret, err)
    except (CommandExecutionError, SaltInvocationError) as err:
        return _fail(ret, err)
    if signal is None:
        ret["comment"] = f"Config of {name} is now version {rendered.version}"
    else:
        ret["comment"] = (
            f"Config of {name}: version {rendered.version} written; dockerops.running "
            f"makes it current and sends {signal}, proving each reload"
        )
    ret["comment"] += "".join(f"; {step}" for step in steps)
    return ret


def _config_image_state(ret, spec, image):
    """``config_managed`` of a service whose config is baked into an image."""
    ret["comment"] = f"Config image of {spec.name}: {image.comment}"
    if image.present and not image.built:
        return ret
    images = sorted({c.image for c in _docker_host().managed(spec.name, kept=True)})
    old = images[0] if len(images) == 1 else (images or None)
    ret["changes"] = {"config_image": {"old": old, "new": image.ref, "image_id": image.image_id}}
    if __opts__["test"]:
        ret["result"] = None
    return ret


@_closes_clients
@_writes_metrics
def absent(name, remove_config=False):
    """
    Ensure no container of service ``name`` runs on this minion.

    remove_config
        Also remove the service's config directory: what dockerops wrote there
        (its versions, ``..data``, the name links, the marker), then the
        directory if that left it empty. Its location is read from pillar, so
        the service must still be declared there. A directory dockerops does
        not own (no marker, and entries dockerops did not write) is refused
        before any container is touched; data directories are never touched.

    .. code-block:: yaml

        dockerops-service-old-absent:
          dockerops.absent:
            - name: old
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    try:
        _spec.check_service_name(name)
        __context__.setdefault(_DESIRED_KEY, {})[name] = 0
        store = removal = None
        if remove_config:
            spec = _spec.load_service(__pillar__, name, allow_privileged=_privileged())
            if spec.config_root:
                store = _config.ConfigStore.of(spec)
                # Refuses a root dockerops does not own, before anything is touched.
                removal = store.removal()
        result = _converge.remove_service(
            _host.minion_host(__opts__, __context__),
            name,
            test=__opts__["test"],
            state_dir=_records.state_dir(__opts__),
        )
        ret["changes"] = result.changes
        ret["comment"] = result.comment
        ret["result"] = result.result
        if not result.actions:
            ret["comment"] = f"Service {name} has no containers on this host"
        if removal is None or not (removal.removed or removal.kept or removal.root_removed):
            return ret
        if result.result is False:
            return ret
        if not __opts__["test"]:
            removal = store.remove()
        else:
            ret["result"] = None
        if removal.kept:
            ret["changes"]["config"] = {"removed": removal.removed, "kept": removal.kept}
            ret["comment"] += (
                f"; config root {store.root} kept: it holds {', '.join(removal.kept)}, "
                "which dockerops did not write"
            )
        else:
            ret["changes"]["config"] = {"removed": str(store.root)}
    except (CommandExecutionError, SaltInvocationError) as err:
        return _fail(ret, err)
    return ret


@_closes_clients
def mod_watch(name, sfun=None, **kwargs):
    """
    Restart service ``name`` when a watched state changed (see ``running``).

    Follows ``config:on_change``: ``rolling`` restarts one replica at a time,
    each health-gated; ``restart`` all at once; ``signal:SIG`` sends the signal;
    ``none`` does nothing. Replicas created by this run are not restarted again.
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    if sfun != "running":
        ret["comment"] = f"dockerops.{sfun} does nothing on watch"
        return ret
    try:
        spec = _spec_of(name, kwargs)
        result = _converge.restart_service(
            _host.minion_host(__opts__, __context__),
            spec,
            rolling=True,
            exclude=__context__.get(_touched_key(name), set()),
            test=__opts__["test"],
        )
    except (CommandExecutionError, SaltInvocationError) as err:
        return _fail(ret, err)
    ret["changes"] = result.changes
    ret["result"] = result.result
    ret["comment"] = (
        result.comment if result.errors else f"Service {name}: " + "; ".join(result.steps)
    )
    return ret
