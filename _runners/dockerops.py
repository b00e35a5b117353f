"""
Roll dockerops services across minion groups: health-gated batches, canaries,
a fleet-wide capacity floor, a failure budget and rolling rollback.

The host-local work is ``dockerops.rolling_update`` / ``state.apply`` on each
minion. What to run when, and what it means, is the fleet engine's
(``dockerops.fleet``): this runner only makes the ``LocalClient`` calls the
engine asks for and prints the lines it gives back, one per step.
"""

import contextlib
import logging
import os
import time

try:
    import dockerops as _lib

    HAS_LIB = hasattr(_lib, "__path__")
    if HAS_LIB:
        from dockerops import fleet as _fleet
        from dockerops import lock as _locking
        from dockerops import reaction as _reaction
        from dockerops import spec as _spec
except ImportError:
    HAS_LIB = False

import salt.client
import salt.runner
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "dockerops"

# The outputter (_output/dockerops.py) that prints a progress event as its
# one line; salt-run's ``--out`` still wins.
PROGRESS_OUTPUTTER = "dockerops"


def __virtual__():
    if not HAS_LIB:
        return (False, "dockerops: the dockerops library (saltutil.sync_all or pip) is required")
    return __virtualname__


def _say(*lines):
    """Progress lines: shown by salt-run as they happen, one line each, and logged."""
    for line in lines:
        log.info("dockerops: %s", line)
        # __jid_event__ only exists inside a runner job.
        with contextlib.suppress(NameError):
            __jid_event__.fire_event({"message": line, "outputter": PROGRESS_OUTPUTTER}, "progress")


@contextlib.contextmanager
def _client():
    """A LocalClient, destroyed when the run ends."""
    client = salt.client.get_local_client(__opts__["conf_file"])
    try:
        yield client
    finally:
        client.destroy()


def _close_cli_runner():
    """Have salt-run's Runner (and its MasterMinion) destroyed once it has
    printed this job's return.

    salt-run (3008) never destroys them, so Python warns about both at exit;
    nothing uses them after the return is printed. Only salt-run's own
    ``salt.runner.Runner`` is touched: a RunnerClient (the reactor, salt-api,
    orchestration) lives on and is left alone.
    """
    with contextlib.suppress(NameError, ReferenceError):
        printer = __jid_event__.print_func
        runner = getattr(printer, "__self__", None)
        if type(runner) is not salt.runner.Runner:
            return

        def print_then_close(suffix, event):
            printer(suffix, event)
            if suffix == "ret":
                mminion = getattr(runner, "_mminion", None)
                if mminion is not None:
                    mminion.destroy()
                    # Its finalizer takes only None (not destroy's {}) for torn down.
                    mminion.returners = mminion.functions = mminion.utils = None
                runner.destroy()

        __jid_event__.print_func = print_then_close


def _lock(name):
    base = os.path.join(__opts__["cachedir"], "dockerops")
    return _locking.RolloutLock(base, name, scope="fleet")


def _call(client, minions, call, timeout):
    """``call`` on ``minions``: their full returns, and how long it took."""
    started = time.monotonic()
    returns = client.cmd(
        list(minions), call.fun, call.args, tgt_type="list", timeout=timeout, full_return=True
    )
    return returns or {}, round(time.monotonic() - started, 1)


def _status(client, minions, service, timeout):
    return client.cmd(minions, "dockerops.status", [service], tgt_type="list", timeout=timeout)


def _drive(client, engine):
    """Make the calls ``engine`` asks for, batch after batch, then its rollback."""
    for batch in engine.batches():
        status = asked = None
        if engine.checks_health:
            # Only the minions the floor needs (the batch's, those whose count
            # is unknown, a refresh), never the whole fleet.
            asked = engine.to_check(batch)
            status = {}
            if asked:
                status = _status(client, asked, engine.service, engine.timeout) or {}
        gate = engine.may_start(batch, status, asked)
        _say(*gate.lines)
        if gate.minions:
            returns, took = _call(client, gate.minions, engine.call(batch), engine.timeout)
            _say(*engine.record(batch, returns, took, gate.minions))
        time.sleep(engine.pause_after(batch))
    for group in engine.rollback_groups():
        _say(*group.lines)
        if group.minions:
            returns, took = _call(client, group.minions, group.call, engine.timeout)
            _say(*engine.record_rollback(group, returns, took))
    _say(*engine.finish())
    return _finish(engine.summary())


def _finish(summary):
    __context__["retcode"] = summary["retcode"]
    return summary


def _refused(summary, err):
    _say(str(err))
    return _finish({**summary, "comment": str(err), "result": False, "retcode": 1})


def rolling_update(
    name,
    tgt,
    tgt_type="glob",
    batch=1,
    min_healthy="75%",
    canary=0,
    max_failures=0,
    pause=0,
    rollback=True,
    tag=None,
    test=False,
    timeout=300,
):
    """
    Roll service ``name`` to a new version across the targeted minions.

    tgt, tgt_type
        The minions (glob, compound, grain, nodegroup, list...).

    batch
        Minions per batch: a count or a percentage (``25%``).

    min_healthy
        The fleet-wide healthy floor, a count or a percentage of all replicas
        (default ``75%``). Checked before starting (settings that could go below
        it are refused) and before every batch: ``dockerops.status`` of the
        batch's minions, of those whose last return did not say how many
        replicas are healthy, and of as many others again, round the fleet;
        every other minion counts as last seen.

    canary
        Roll this many minions first, alone, then the rest.

    max_failures
        The failure budget for the whole rollout (not per batch). A minion that
        does not answer within ``timeout`` counts as failed. Past the budget the
        rollout stops and, with ``rollback`` (default), every minion already
        updated is rolled back, in batches, health-gated.

    pause
        Seconds to wait between batches.

    tag
        The version (default: each minion's pillar ``tag``).

    test
        Print the plan; change nothing.

    Returns a summary per targeted minion (state, from, to, now, result,
    duration; "not started" for those a stopped rollout never reached) and
    exits non-zero on failure. One fleet rollout per service at a time (a
    master-side lock).

    CLI Example:

    .. code-block:: bash

        salt-run dockerops.rolling_update web tgt='prd-*' batch=25% canary=1
        salt-run dockerops.rolling_update web tgt='G@role:web' tgt_type=compound test=True
    """
    _close_cli_runner()
    summary = {"service": name, "minions": {}}
    try:
        options = _fleet.RolloutOptions.from_args(
            name,
            tgt,
            tgt_type=tgt_type,
            batch=batch,
            min_healthy=min_healthy,
            canary=canary,
            max_failures=max_failures,
            pause=pause,
            rollback=rollback,
            tag=tag,
            test=test,
            timeout=timeout,
        )
        with _client() as client, _lock(name).held(jid=__opts__.get("jid")):
            engine = _plan_rollout(client, options)
            _say(*engine.describe())
            return _drive(client, engine)
    except (CommandExecutionError, SaltInvocationError) as err:
        return _refused(summary, err)


def _plan_rollout(client, options):
    """Ask the targeted minions what runs and how each would roll."""
    status = client.cmd(
        options.tgt,
        "dockerops.status",
        [options.service],
        tgt_type=options.tgt_type,
        timeout=options.timeout,
    )
    running = sorted(_fleet.replicas_running(status or {}, options.service))
    previews = {}
    if running:
        previews = client.cmd(
            running,
            "dockerops.rolling_update",
            options.preview_args(),
            tgt_type="list",
            timeout=options.timeout,
        )
    return _fleet.plan_rollout(options, status or {}, previews or {})


def apply(
    tgt,
    tgt_type="glob",
    batch=1,
    min_healthy=None,
    service=None,
    max_failures=0,
    pause=0,
    test=False,
    timeout=600,
):
    """
    Apply the dockerops states across minions in health-gated batches.

    A config change (or any pillar change) then never restarts every replica of
    a service at once: each batch must converge (every state passing, each
    replica health-gated on its host) before the next starts, and with
    ``service`` and ``min_healthy`` the fleet's healthy replicas of that service
    are checked before every batch. Batches, floor and failure budget work as
    in ``dockerops.rolling_update``.

    CLI Example:

    .. code-block:: bash

        salt-run dockerops.apply tgt='prd-*' batch=2
        salt-run dockerops.apply tgt='prd-*' batch=25% service=web min_healthy=75%
    """
    _close_cli_runner()
    try:
        options = _fleet.ApplyOptions.from_args(
            tgt,
            tgt_type=tgt_type,
            batch=batch,
            min_healthy=min_healthy,
            service=service,
            max_failures=max_failures,
            pause=pause,
            test=test,
            timeout=timeout,
        )
        with _client() as client:
            answered = sorted(
                client.cmd(tgt, "test.ping", tgt_type=tgt_type, timeout=options.timeout) or {}
            )
            status = None
            if options.service is not None and answered:
                status = _status(client, answered, options.service, options.timeout) or {}
            engine = _fleet.plan_apply(options, answered, status)
            return _drive(client, engine)
    except (CommandExecutionError, SaltInvocationError) as err:
        return _refused({"minions": {}}, err)


def react(data, restart=True, window="1h"):
    """
    React to a ``dockerops`` beacon event, as the reactor example
    (``salt://reactor/dockerops.sls``) calls it: record it on the master and,
    for a ``crash_loop`` or ``gave_up``, restart the service on that minion
    once (``dockerops.restart``, started without waiting). Within ``window``
    after a restart, further events of that minion's service are only
    recorded: the reactor never loops.

    The record (``<cachedir>/dockerops/reactions.json``, the last 50 per
    minion and service) says what was decided and why.

    data
        The beacon event's data: ``id`` (the minion), ``service``,
        ``event``, ``replica``, ``container``, ``image``, ``reason``.

    restart
        ``False``: record only, never restart.

    window
        How long after a restart further events are only recorded
        (``30m``, ``1h``, seconds). Default ``1h``.

    CLI Example:

    .. code-block:: bash

        salt-run dockerops.react '{"id": "web1", "service": "web", "event": "gave_up"}'
    """
    if not isinstance(data, dict):
        raise SaltInvocationError("data must be the beacon event's data (a mapping)")
    minion, service = data.get("id"), data.get("service")
    if not isinstance(minion, str) or not minion:
        raise SaltInvocationError("data has no minion id")
    _spec.check_service_name(service)
    try:
        _spec.parse_duration(window)
    except ValueError as err:
        raise SaltInvocationError(f"window: {err}") from None
    base = os.path.join(__opts__["cachedir"], "dockerops")
    reaction = _reaction.ReactionLog(base).react(
        minion, service, data, time.time(), window=window, restart=bool(restart)
    )
    out = {
        "minion": minion,
        "service": service,
        "action": reaction.action,
        "comment": reaction.reason,
    }
    log.warning("dockerops: %s on %s: %s", service, minion, reaction.reason)
    if reaction.action == "restart":
        with _client() as client:
            out["jid"] = client.cmd_async(minion, "dockerops.restart", [service], tgt_type="list")
    return out
