"""
Run Docker services declared in pillar (``dockerops:services``).

The minion option ``dockerops.docker_url`` names the Docker daemon this minion
manages (default ``unix:///var/run/docker.sock``). The work is done by the
``dockerops`` Python library, installed with pip/salt-pip or synced from
``salt://_utils`` with ``saltutil.sync_all``.
"""

import contextlib
import functools
import logging
import time
from collections.abc import Mapping

import salt.utils.args
from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import dockerops as _lib

    # Guard against this very file being found as "dockerops" on sys.path.
    HAS_LIB = hasattr(_lib, "__path__")
    if HAS_LIB:
        from dockerops import backup as _backup
        from dockerops import client as _client
        from dockerops import configimage as _configimage
        from dockerops import configmode as _configmode
        from dockerops import converge as _converge
        from dockerops import errors as _errors
        from dockerops import events as _events
        from dockerops import filelogs as _filelogs
        from dockerops import fleet as _fleet
        from dockerops import history as _history
        from dockerops import host as _host
        from dockerops import metrics as _metrics
        from dockerops import netns as _netns
        from dockerops import plan as _plan
        from dockerops import records as _records
        from dockerops import render as _render
        from dockerops import schedules as _schedules
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


def _privileged():
    """Whether this minion lets pillar ask for privileged containers: the
    minion option ``dockerops.allow_privileged`` (pillar alone cannot)."""
    return bool(__opts__.get("dockerops.allow_privileged", False))


def _docker():
    """The minion's Docker host, with pillar's registry credentials for pulls."""
    return _host.minion_host(__opts__, __context__, __pillar__)


def _rendered(spec):
    """``spec``'s config, rendered (files from etcd read with ``dockerops:etcd``)."""
    etcd = _spec.load_root(__pillar__).etcd if spec.etcd_files else None
    return _render.render_service_config(spec, __salt__, etcd=etcd)


def _to_run(host, spec, test, build=None):
    """What converging ``spec`` runs (:mod:`dockerops.configmode`): a config
    image is found in the registry, or built and pushed (not under ``test``)."""
    rendered = _rendered(spec)
    if not _configmode.uses_image(spec):
        return _configmode.Running(spec, rendered)
    registries = _spec.load_root(__pillar__).registries
    return _configmode.running(
        host, spec, rendered, registries, _records.state_dir(__opts__), test=test, build=build
    )


def _closes_clients(func):
    """Close the Docker clients a call opened when it ends.

    Jobs run as threads (``multiprocessing: False``) each get a fresh
    ``__context__``: a client left open there keeps its connections to the
    daemon until the garbage collector happens to run. A call made from
    another (``rollback`` -> ``rolling_update``) leaves them to the outer one.
    """

    @functools.wraps(func)
    def call(*args, **kwargs):
        depth = __context__.get("dockerops.call_depth", 0)
        __context__["dockerops.call_depth"] = depth + 1
        if not depth:
            # What an earlier call read is not this one's (a container may have died since).
            _client.forget_reads(__context__)
        try:
            return func(*args, **kwargs)
        finally:
            __context__["dockerops.call_depth"] = depth
            if not depth:
                _client.close_clients(__context__)
                if func.__name__ not in _READS_FOR_THE_STATE_RUN:
                    _client.forget_reads(__context__)

    return call


# Called by the formula while the state run renders: what they read serves the
# run's states (dockerops.client.kept_reads; at most a few seconds old).
_READS_FOR_THE_STATE_RUN = frozenset({"first_deploys"})


def _test(test):
    return bool(__opts__.get("test", False) if test is None else test)


def _progress(service):
    """Fire ``dockerops/rollout/<service>/<stage>`` events as a rollout moves."""
    send = __salt__["event.send"] if _events.event_bus_listens(__opts__) else None
    return _events.event_progress(send, service)


def _shape(result, whole_return=False):
    """A service result as Salt returns it; a failure sets the exit code.

    ``whole_return``: the dict is the function's whole return. Salt then takes
    any ``result`` that is not true for a failure (exit code 1), so a valid
    ``test=True`` plan (``None`` in a state) reports ``result: True``, with
    ``test: True``.
    """
    if result.result is False:
        __context__["retcode"] = 1
    out = {"result": result.result, "comment": result.comment, "changes": result.changes}
    if whole_return and result.result is None:
        out.update(result=True, test=True)
    return out


@_closes_clients
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


@_closes_clients
def services():
    """
    Compare every pillar service with what runs on this host.

    Per service: image, desired and running replica counts, whether it is in
    sync and the actions a state run would take (a service whose config
    cannot be had now, from etcd or its registry, shows ``in_sync: None`` and
    the ``error``). The dockerops containers of a
    service not in this pillar (run by another minion config sharing the
    daemon, or taken out of pillar) are listed with ``not_in_pillar: True``:
    no state run touches them, and ``dockerops.remove <service>`` removes them.

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.services
    """
    specs = _spec.load_services(__pillar__, allow_privileged=_privileged())
    host = _docker()
    versions = {}
    running = []
    errors = {}
    for spec in specs:
        # A config image is looked up, never built, here. One service whose
        # config cannot be had (etcd, the registry) does not hide the others.
        try:
            run = _to_run(host, spec, test=True)
        except (CommandExecutionError, SaltInvocationError) as err:
            errors[spec.name] = str(err)
            continue
        rendered = run.rendered
        versions[spec.name] = rendered.version if rendered else None
        if run.image is not None:
            versions[spec.name] = run.image.version
        running.append(run.spec)
    out = _status.services_overview(host, running, versions)
    for name, error in errors.items():
        out[name] = {"in_sync": None, "error": error}
    return out


@_closes_clients
def build_config_image(name, test=None):
    """
    Build service ``name``'s config image and push it to its registry.

    The final image of the layered standard: the service's app image
    (``image:tag``) plus its rendered ``config:files`` at ``config:path`` as
    one last layer, tagged ``<tag>-<environment_short>-<config hash>`` in the
    app's repository (``dockerops:environment_short``, default: the
    environment), labelled with ``org.opencontainers.image.version``,
    ``.base.name``, ``.base.digest`` and ``io.dockerops.config.version``.
    Builds are reproducible (fixed file times and modes: the same inputs give
    the same image ID), and the registry is asked first: a tag already there
    is neither built nor pushed again. Credentials come from
    ``dockerops:registries``.

    Works for any service with a config directory; a service with
    ``config:mode: image`` runs this image (its state builds it where
    ``config:build`` allows).

    test
        Say whether it would be built, and its tag; build nothing.

    Returns ``ref``, ``tag``, ``config_version`` (of the files and
    ``config:path``), ``image_id``, ``digest`` (``ref@digest`` pins it),
    ``base``, ``base_digest``, ``built``, ``pushed`` and a ``comment``.

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.build_config_image web test=True
        salt 'build-1' dockerops.build_config_image web
    """
    spec = _spec.load_service(
        __pillar__, _spec.check_service_name(name), allow_privileged=_privileged()
    )
    if spec.config is None:
        raise SaltInvocationError(
            f"service {name} has no config (dockerops:services:{name}:config)"
        )
    host = _docker()
    registries = _spec.load_root(__pillar__).registries
    image = _configimage.ensure_config_image(
        host.api, spec, _rendered(spec), registries, build=True, test=_test(test)
    )
    out = {
        "result": True,
        "ref": image.ref,
        "tag": image.tag,
        "config_version": image.version,
        "image_id": image.image_id,
        "base": image.base_ref,
        "base_digest": image.base_digest,
        "digest": image.digest,
        "built": image.built,
        "pushed": image.pushed,
        "comment": image.comment,
    }
    if _test(test):
        out["test"] = True
    return out


def services_with_config():
    """
    The pillar services that have a config directory, sorted: ``config`` set on
    the service or under ``dockerops:defaults`` (from any pillar file, such as
    an environment's). The formula gives each a ``dockerops.config_managed``
    state. Pillar is read, not validated: the states report its problems.

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.services_with_config
    """
    return _spec.services_with_config(__pillar__)


@_closes_clients
def first_deploys():
    """
    The pillar services none of whose replicas runs on this minion, sorted:
    starting them puts no running replica at risk. The formula runs their
    ``dockerops.running`` states with ``parallel: True``, so their starts and
    health waits overlap; each still reports whether its own replicas became
    healthy. Pillar is read, not validated (the states report its problems).
    The host's containers are listed once, and the state run reuses that list.

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.first_deploys
    """
    raw = __pillar__.get(_spec.PILLAR_KEY)
    services = raw.get("services") if isinstance(raw, Mapping) else None
    names = {n for n in services if isinstance(n, str)} if isinstance(services, Mapping) else set()
    if not names:
        return []
    try:
        # Not _docker(): pillar's registry credentials are not needed, and an
        # invalid pillar must not fail the render (its states report it).
        host = _host.minion_host(__opts__, __context__)
        running = {c.service for c in host.managed(kept=True) if c.state == "running"}
    except CommandExecutionError as err:
        # The states say what is wrong with the daemon, each naming its service.
        log.warning("dockerops: cannot tell which services are first deploys: %s", err)
        return []
    return sorted(names - running)


def file_logs():
    """
    The pillar services that declare file logs (``logs: {path: ...}``), under
    ``services``: their host directory (one subdirectory per slot), container
    path, environment, slots, and the files the formula writes for them (a
    Filebeat input, an rsyslog imfile input, a logrotate rule); and
    ``rsyslog_module_file``, where imfile is loaded (None: not by dockerops).
    The formula asks it once. A service whose pillar is invalid is left out
    (its states report why).

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.file_logs
    """
    return _filelogs.formula_file_logs(__pillar__, _privileged())


def backup_schedules():
    """
    What the formula (``dockerops.backups``) does to this minion's Salt
    scheduler for backups, in one call: ``schedules``, per pillar service
    with ``backup: {schedule: ...}``, the keys of its entry
    ``dockerops-backup-<service>`` (which runs ``dockerops.backup <service>``);
    ``stale``, the minion's ``dockerops-backup-*`` entries whose service no
    longer has a schedule (removed);
    ``invalid``, per service asking for a schedule that fails validation (or
    without ``dockerops:backup`` repository and password), its problems (its
    entry is left as it is); ``problems``, an invalid top of pillar (nothing
    is added or removed).

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.backup_schedules
    """
    # The minion's schedule as this job got it (the running scheduler's; under
    # salt-call, the saved one): no round trip to the scheduler, no file read.
    entries = __opts__.get("schedule")
    scheduled = list(entries) if isinstance(entries, dict) else []
    return _schedules.backup_schedules(__pillar__, scheduled, _privileged())


@_closes_clients
def status(name=None):
    """
    Per replica: slot, container, image, state, health, restart count, config
    version, the inputs it runs with (``settings``).

    How it runs: the last health-check output (``health_output``), its last
    exit (``exit_code``, ``oom_killed``, ``started_at``, ``finished_at``),
    ``gave_up`` with ``gave_up_reason`` when Docker will not restart it again
    (``on-failure:N`` used up, or ``no``), ``crash_loop`` with
    ``crash_loop_reason`` while Docker restarts it over and over (pillar
    ``dockerops:monitoring:crash_loop: {restarts: 3, window: 5m}``, the
    default), and a ``warning`` under ``always`` or ``unless-stopped``, which
    restart a failing replica forever, unnoticed.

    ``old_log_settings`` is true for a replica created with other log
    settings (``logging``, ``logs``) than pillar's now: the next state run
    recreates it.

    Each replica also shows its service's ``last_stop``: the last replica
    dockerops stopped, how long that took, and whether it had to be killed
    after its grace period (with a hint: set ``init: true`` or ``stop_signal``).

    And its service's ``last_backup`` (``{time, age, snapshot}``: the last
    successful ``dockerops.backup``, ``age`` in seconds) and
    ``last_backup_failure`` (``{time, age, error}``); None when there was none.

    name
        Only this service. Default (``None``): every dockerops container on this
        host. An empty or invalid name is refused.

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.status
        salt '*' dockerops.status web
    """
    if name is not None:
        _spec.check_service_name(name)
    policy = _status.crash_loop_policy(__pillar__)
    # Which replicas still run other log settings than pillar's (old_log_settings).
    log_settings = _filelogs.pillar_log_settings(__pillar__, _privileged())
    return _status.replica_status(
        _docker(), name, _records.state_dir(__opts__), policy, log_settings=log_settings
    )


@_closes_clients
def write_metrics():
    """
    Write the services' state as Prometheus metrics for node_exporter's
    textfile collector (every ``dockerops.running``/``absent`` state run does too).

    The file is the minion option ``dockerops.metrics_file`` (default
    ``/var/lib/prometheus/node-exporter/dockerops.prom``; empty: off), replaced
    atomically. When its directory does not exist, nothing is written.
    Returns ``{"path": ..., "written": True|False}``; a symlink at the path or
    a write that fails raises an error.

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.write_metrics
    """
    path = _metrics.metrics_file(__opts__)
    if path is None:
        return {"path": None, "written": False}
    state_dir = _records.state_dir(__opts__)
    written = _metrics.write_metrics(_docker(), path, state_dir, __pillar__, None, _privileged())
    return {"path": path, "written": written}


@_closes_clients
def check_ports(name):
    """
    What each replica of service ``name`` listens on, and which connections it
    holds, inside its own network namespace (which the host's ``ss`` cannot see).

    Read from the host through ``/proc/<pid>/net`` of each replica's main
    process, checked to be the container's: no ``docker exec``, so images
    without a shell or tools work too. Per replica (by container name):
    ``ports`` (``8080/tcp``: TCP listening, UDP bound), ``listening``
    (address:port/proto), ``loopback_only`` (ports only on 127.0.0.1/::1,
    unreachable from outside the container), ``connections`` (local, remote,
    state; the first 100) and ``connection_count``; ``missing``: the
    service's ``expect_ports`` it does not listen on. A replica that is not
    running is shown with ``running: False``.

    ``result`` is False (and the exit code non-zero) when a running replica
    misses an expected port or cannot be read, or when ports are expected and
    no replica runs: a monitoring system can call this one function.

    name
        The service. Its ``expect_ports`` come from pillar; a service not in
        pillar is read with none expected.

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.check_ports web
    """
    _spec.check_service_name(name)
    expected, wanted = [], 0
    if name in _spec.service_names(__pillar__):
        spec = _spec.load_service(__pillar__, name, allow_privileged=_privileged())
        expected, wanted = list(spec.expect_ports), spec.replicas
    report = _netns.check_ports(_docker(), name, expected, wanted)
    if not report["result"]:
        __context__["retcode"] = 1
    return report


def _jid(kwargs):
    """The job's id (Salt passes ``__pub_jid`` to functions taking ``**kwargs``).

    Any other keyword is refused, as Salt does for functions without ``**kwargs``.
    """
    jid = kwargs.get("__pub_jid")
    unknown = salt.utils.args.clean_kwargs(**kwargs)
    if unknown:
        salt.utils.args.invalid_kwargs(unknown)
    return jid or __opts__.get("jid")


@_closes_clients
def apply(name=None, test=None, **kwargs):
    """
    Converge this host to pillar, like the ``dockerops.running`` state.

    name
        Only this service. Default (``None``): every service in
        ``dockerops:services``. An empty or invalid name is refused.

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
    jid = _jid(kwargs)
    if name is None:
        specs = _spec.load_services(__pillar__, allow_privileged=_privileged())
    else:
        specs = [
            _spec.load_service(
                __pillar__, _spec.check_service_name(name), allow_privileged=_privileged()
            )
        ]
    host = _docker()
    out = {}
    for spec in specs:
        # One service's failure (bad template, daemon error) does not stop the others.
        try:
            run = _to_run(host, spec, _test(test))
            result = _converge.converge(
                host,
                run.spec,
                run.rendered,
                state_dir=_records.state_dir(__opts__),
                test=_test(test),
                progress=_progress(spec.name),
                jid=jid,
                history_keep=_records.history_keep(__opts__),
            )
            out[spec.name] = _shape(result)
        except (CommandExecutionError, SaltInvocationError) as err:
            out[spec.name] = {"result": False, "comment": str(err), "changes": {}}
            __context__["retcode"] = 1
    return out


@_closes_clients
def rolling_update(
    name,
    tag=None,
    test=None,
    parallelism=None,
    order=None,
    health_timeout=None,
    min_healthy_time=None,
    rollback=None,
    **kwargs,
):
    """
    Roll service ``name`` on this host to a new version, health-gated.

    name
        The service (from pillar).

    tag
        The version to roll to. Default: the pillar's ``tag``. A tag that
        differs from pillar lasts until the next highstate, which converges back
        to pillar's (the return says so).

    test
        Return the plan (which replicas, in what order, from what to what) and
        touch nothing.

    parallelism, order, health_timeout, min_healthy_time, rollback
        Override the service's ``update`` settings for this rollout:
        replicas replaced at a time (default 1), ``start-first`` (default: a
        replacement starts in a spare slot before the replica it replaces stops)
        or ``stop-first``, how long a replacement may take to become healthy,
        how long it must then stay healthy without restarting (default and
        minimum: what the healthcheck needs to notice a failure), and whether a
        failure puts every replaced replica back (default True).

    The image is pulled before any container is touched. One rollout per
    service runs at a time on a host (a lock); each is recorded in
    ``dockerops.history`` with the job's id; progress is fired as
    ``dockerops/rollout/<name>/...`` events. Start-first batches overlap: the
    next starts once those in flight are healthy, and an old replica stops
    only once its replacement has stayed healthy for ``min_healthy_time``.

    Returns ``result``, ``comment``, ``changes``, ``from`` and ``to`` (images),
    ``now`` (the images running when it returns),
    ``duration`` (seconds), ``update`` (the order and parallelism used),
    ``steps``, ``rolled_back`` (after a failure), ``plan`` (under ``test``) and
    ``note`` (when ``tag`` is not pillar's). A failure returns
    ``result: False`` and a non-zero exit code.

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.rolling_update web
        salt 'prd-*' dockerops.rolling_update web tag=1.5 test=True
    """
    update = {
        key: value
        for key, value in {
            "parallelism": parallelism,
            "order": order,
            "health_timeout": health_timeout,
            "min_healthy_time": min_healthy_time,
            "rollback": rollback,
        }.items()
        if value is not None
    }
    overrides = {"update": update} if update else {}
    if tag is not None:
        overrides["tag"] = str(tag)
    return _rolling_update(name, overrides, test, _jid(kwargs))


def _rolling_update(name, overrides, test, jid, exact=False):
    """``rolling_update``; ``exact``: the tag names what to run as it is (a
    rollback to a config image from the history), nothing is built."""
    pillar_spec = _spec.load_service(__pillar__, name, allow_privileged=_privileged())
    spec = _spec.load_service(__pillar__, name, overrides, allow_privileged=_privileged())
    host = _docker()
    state_dir = _records.state_dir(__opts__)
    test = _test(test)
    if exact:
        # A config image from the history needs no render (nor etcd, nor templates).
        rendered = None if _configmode.uses_image(spec) else _rendered(spec)
        run = _configmode.exact(spec, rendered)
    else:
        run = _to_run(host, spec, test)
    asked = spec
    spec = run.spec
    running = sorted({c.image for c in host.managed(name)})
    started = time.monotonic()
    result = _converge.converge(
        host,
        spec,
        run.rendered,
        state_dir=state_dir,
        test=test,
        progress=None if test else _progress(name),
        jid=jid,
        history_keep=_records.history_keep(__opts__),
    )
    shaped = _shape(result, whole_return=True)
    listed = None
    if result.result is not False:
        listed = result.listed  # listed again after converging
    else:
        # The daemon went away: the failure says so already.
        with contextlib.suppress(_errors.DockerError):
            listed = host.managed(name)
    now = {c.image for c in listed or ()}
    # For the fleet runner's capacity floor (its next check need not ask this
    # minion again); None (ask it) when the containers could not be listed.
    healthy = None
    if listed is not None and not test:
        healthy = sum(1 for c in listed if c.state == "running" and c.health in ("healthy", None))
    note = None
    if asked.image_ref != pillar_spec.image_ref:
        note = (
            f"{spec.image_ref} is not pillar's version ({pillar_spec.image_ref}): the next "
            "highstate will converge back to pillar's unless pillar is changed"
        )
    # One typed return, read back by the fleet runner (dockerops.fleet.HostRollout).
    return _fleet.HostRollout(
        result=shaped["result"],
        comment=shaped["comment"],
        changes=shaped["changes"],
        test=shaped.get("test", False),
        before=tuple(running),
        to=spec.image_ref,
        now=tuple(sorted(now)),
        duration=round(time.monotonic() - started, 2),
        order=spec.update.order,
        parallelism=spec.update.parallelism,
        steps=tuple(result.steps),
        rolled_back=tuple(result.rolled_back),
        plan=tuple(_plan.describe_plan(spec, result.actions)) if test else None,
        note=note,
        healthy=healthy,
    ).to_dict()


@_closes_clients
def rollback(name, test=None, **kwargs):
    """
    Roll service ``name`` back to its last good version on this host.

    The last good version is the newest successful rollout in
    ``dockerops.history`` to an image other than the one running now; the
    rollback is a rolling update to it, health-gated like any other.

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.rollback web
    """
    _spec.check_service_name(name)
    running = {c.image for c in _docker().managed(name)}
    good = _history.History(_records.state_dir(__opts__), name).last_good(other_than=running)
    if good is None or not isinstance(good.get("to"), str):
        raise CommandExecutionError(f"no earlier good version of {name} in its history")
    target = good["to"]
    repository, _, tag = target.rpartition(":")
    pillar_spec = _spec.load_service(__pillar__, name, allow_privileged=_privileged())
    if repository != pillar_spec.image:
        raise CommandExecutionError(
            f"the last good version {target} is not of {pillar_spec.image}; roll it with "
            "rolling_update after changing pillar"
        )
    # rolling_update's update settings apply to the rollback too.
    settings = ("parallelism", "order", "health_timeout", "min_healthy_time", "rollback")
    update = {key: kwargs.pop(key) for key in settings if kwargs.get(key) is not None}
    overrides = {"tag": tag, **({"update": update} if update else {})}
    # A config image from the history runs as it is: its config is the one
    # that was good then, not what pillar renders now.
    return _rolling_update(name, overrides, test, _jid(kwargs), exact=True)


@_closes_clients
def history(name, limit=20):
    """
    The rollout history of service ``name`` on this host, newest first.

    Each entry: when, from, to, result, rolled-back replicas, duration (s), jid.
    The history keeps the newest ``dockerops.history_keep`` rollouts (minion
    option, default 100).

    limit
        The number of entries returned (default 20; 0 or more).

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.history web
        salt '*' dockerops.history web limit=5
    """
    if isinstance(limit, str) and limit.strip().isdigit():
        limit = int(limit)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise SaltInvocationError(f"limit must be a whole number, 0 or more, not {limit!r}")
    _spec.check_service_name(name)
    entries = _history.History(_records.state_dir(__opts__), name).entries(limit)
    return list(reversed(entries))


@_closes_clients
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
    spec = _spec.load_service(__pillar__, name, allow_privileged=_privileged())
    return _shape(
        _converge.restart_service(_docker(), spec, rolling=rolling, test=_test(test)),
        whole_return=True,
    )


@_closes_clients
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
    _spec.check_service_name(name)
    result = _converge.remove_service(
        _docker(), name, test=_test(test), state_dir=_records.state_dir(__opts__)
    )
    return _shape(result, whole_return=True)


def _backup_send():
    """Salt's ``event.send`` when the event bus listens (None: log only)."""
    return __salt__["event.send"] if _events.event_bus_listens(__opts__) else None


def _restic():
    """The restic repository of pillar ``dockerops:backup``."""
    settings = _spec.load_root(__pillar__).backup
    cache = f"{_records.state_dir(__opts__)}/restic-cache"
    return _backup.repository(settings, cache_dir=cache)


def _failed(doing, err):
    """A backup function's failure as a return (``result: False``, exit code 1),
    shaped like the others: a repository fault is an answer, not a crash."""
    return _backup.Outcome(False, f"{doing} failed: {err}", {}, {})


def _backup_return(outcome, whole_return=True):
    if outcome.result is False:
        __context__["retcode"] = 1
    out = {"result": outcome.result, "comment": outcome.comment, "changes": outcome.changes}
    out.update(outcome.data)
    if whole_return and outcome.result is None:
        out.update(result=True, test=True)
    return out


@_closes_clients
def backup(name, test=None, **kwargs):
    """
    Back up a service's data mounts (pillar ``services:<name>:backup``) into
    the restic repository of pillar ``dockerops:backup``, then apply its
    ``keep`` policy to its snapshots from this minion.

    Consistency as ``backup:consistency`` says: ``stop`` stops the replicas
    that write to the data (all at once: they share it), ``pause`` pauses them,
    ``exec`` runs ``backup:exec`` in one replica first, ``none`` neither.
    Stopped or paused replicas are always started again, also when the
    snapshot fails, and the call waits until they are healthy (it fails,
    saying so, when one is not). The snapshot is tagged with the service,
    environment, minion, image and config version. Fires
    ``dockerops/backup/<name>/success`` or ``.../failure``.

    A second backup or restore of the service while one runs fails at once.

    name
        The service.

    test
        Say what would be backed up and how; checks that the repository
        opens, touches nothing.

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.backup web
        salt '*' dockerops.backup web test=True
    """
    jid = _jid(kwargs)
    spec = _spec.load_service(__pillar__, name, allow_privileged=_privileged())
    settings = _spec.load_root(__pillar__).backup
    outcome = _backup.backup_service(
        _docker(),
        spec,
        settings,
        _records.state_dir(__opts__),
        __opts__["id"],
        test=_test(test),
        send=_backup_send(),
        jid=jid,
        restic=_restic(),
        log=lambda text: log.info("dockerops backup %s: %s", name, text),
    )
    if outcome.result is not None:
        _refresh_metrics()
    return _backup_return(outcome)


def _refresh_metrics():
    """Rewrite the metrics file after a backup: a scheduled backup must not wait
    for the next state run to show (the backup-age alert reads it)."""
    path = _metrics.metrics_file(__opts__)
    if not path:
        return
    try:
        _metrics.write_metrics(
            _docker(), path, _records.state_dir(__opts__), __pillar__, None, _privileged()
        )
    except (CommandExecutionError, SaltInvocationError) as err:
        log.warning("dockerops: metrics not written after the backup: %s", err)


def backups(name, all_minions=False):
    """
    List a service's snapshots, newest first: id, time, host, paths, tags
    (service, environment, minion, image, config) and the bytes each added.

    name
        The service.

    all_minions
        Also the snapshots other minions took of the service (default: this
        minion's only).

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.backups web
    """
    _spec.check_service_name(name)
    host = None if all_minions else __opts__["id"]
    return _backup.list_backups(name, _restic(), _records.state_dir(__opts__), host)


def verify_backup(name, id=None):  # pylint: disable=redefined-builtin
    """
    Verify a snapshot of a service: ``restic check`` of the repository, then a
    test restore into a private temporary directory in which restic compares
    every file with the snapshot's content hashes, and the restored tree is
    compared with the snapshot's listing. A damaged snapshot fails here (and
    ``dockerops.restore`` refuses it).

    name
        The service.

    id
        The snapshot (an id or a prefix of at least 4 digits); default: this
        minion's latest.

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.verify_backup web
        salt '*' dockerops.verify_backup web 1a2b3c4d
    """
    spec = _spec.load_service(__pillar__, name, allow_privileged=_privileged())
    restic = _restic()
    try:
        outcome = _backup.verify_backup(
            spec, restic, _records.state_dir(__opts__), __opts__["id"], id
        )
    except _errors.DockerError as err:
        outcome = _failed(f"verifying the backup of {name}", err)
    return _backup_return(outcome)


@_closes_clients
def restore(name, id="latest", test=None, undo=False, **kwargs):  # pylint: disable=redefined-builtin
    """
    Restore a service's data from a snapshot and start it again, healthy.

    The snapshot is first restored beside each data directory and verified
    while the service keeps running (a damaged snapshot is refused there,
    nothing touched). Then the replicas are stopped, each current data
    directory is renamed to ``<dir>.before-restore-<time>`` (kept, never
    deleted), the restored one takes its place, and the replicas are started
    and waited on. If they do not come up healthy, the previous data is put
    back and the service started on it.

    name
        The service.

    id
        The snapshot (an id or a prefix of at least 4 digits); default
        ``latest``: this minion's newest.

    test
        Say which directories would be replaced and how much differs.

    undo
        After a restore that was interrupted (the next call says so): put the
        previous data back and start the replicas it stopped.

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.restore web
        salt '*' dockerops.restore web id=1a2b3c4d test=True
        salt '*' dockerops.restore web undo=True
    """
    jid = _jid(kwargs)
    spec = _spec.load_service(__pillar__, name, allow_privileged=_privileged())
    state_dir = _records.state_dir(__opts__)
    say = lambda text: log.info("dockerops restore %s: %s", name, text)  # noqa: E731
    if undo:
        return _backup_return(_backup.undo_restore(_docker(), spec, state_dir, jid, say))
    try:
        outcome = _backup.restore_service(
            _docker(), spec, _restic(), state_dir, __opts__["id"], id, _test(test), jid, say
        )
    except _errors.DockerError as err:
        outcome = _failed(f"restore of {name}", err)
    return _backup_return(outcome)


def prune_backups(name, test=None):
    """
    Apply a service's ``backup:keep`` policy to its snapshots from this
    minion (``restic forget --prune``, scoped by the service's tag and this
    minion: other services' and other hosts' snapshots are never touched).
    Every ``dockerops.backup`` does this after its snapshot.

    name
        The service.

    test
        Say which snapshots would be forgotten.

    CLI Example:

    .. code-block:: bash

        salt '*' dockerops.prune_backups web test=True
    """
    spec = _spec.load_service(__pillar__, name, allow_privileged=_privileged())
    try:
        outcome = _backup.prune_backups(spec, _restic(), __opts__["id"], test=_test(test))
    except _errors.DockerError as err:
        outcome = _failed(f"pruning the backups of {name}", err)
    return _backup_return(outcome)
