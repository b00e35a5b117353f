"""
Roll dockerops services across minion groups: health-gated batches, canaries,
a fleet-wide capacity floor, a failure budget and rolling rollback.

The host-local work is ``dockerops.rolling_update`` / ``state.apply`` on each
minion; this runner plans the batches (``dockerops.fleet``), checks the fleet's
healthy capacity with ``dockerops.status`` before every batch, stops past the
failure budget and then rolls the already-updated minions back, in batches.
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
        from dockerops import history as _history
except ImportError:
    HAS_LIB = False

import salt.client
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "dockerops"


def __virtual__():
    if not HAS_LIB:
        return (False, "dockerops: the dockerops library (saltutil.sync_all or pip) is required")
    return __virtualname__


def _say(line):
    """A progress line: shown by salt-run as it happens, and logged."""
    log.info("dockerops: %s", line)
    # __jid_event__ only exists inside a runner job.
    with contextlib.suppress(NameError):
        __jid_event__.fire_event({"message": line}, "progress")


def _client():
    return salt.client.get_local_client(__opts__["conf_file"])


def _lock(name):
    base = os.path.join(__opts__["cachedir"], "dockerops")
    return _history.RolloutLock(base, f"fleet-{name}")


def _healthy(client, minions, name, timeout):
    status = client.cmd(list(minions), "dockerops.status", [name], tgt_type="list", timeout=timeout)
    return _fleet.healthy_replicas(status or {}, name), status or {}


def _run_batch(client, batch, fun, arg, timeout):
    """Run ``fun`` on a batch; a minion that does not answer in time has failed."""
    started = time.monotonic()
    returns = client.cmd(list(batch), fun, arg, tgt_type="list", timeout=timeout, full_return=True)
    took = round(time.monotonic() - started, 1)
    return _fleet.judge_returns(returns or {}, batch, timeout, took)


def _finish(summary, ok):
    summary["result"] = ok
    summary["retcode"] = 0 if ok else 1
    __context__["retcode"] = summary["retcode"]
    return summary


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
        it are refused) and, with ``dockerops.status``, before every batch.

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

    Returns a summary per minion (from, to, result, duration) and exits non-zero
    on failure. One fleet rollout per service at a time (a master-side lock).

    CLI Example:

    .. code-block:: bash

        salt-run dockerops.rolling_update web tgt='prd-*' batch=25% canary=1
        salt-run dockerops.rolling_update web tgt='G@role:web' tgt_type=compound test=True
    """
    options = _fleet.RolloutOptions(
        service=name,
        tgt=tgt,
        tgt_type=tgt_type,
        batch=batch,
        min_healthy=min_healthy,
        canary=canary,
        max_failures=max_failures,
        pause=float(pause),
        rollback=rollback,
        tag=None if tag is None else str(tag),
        test=test,
        timeout=int(timeout),
    )
    client = _client()
    summary = {"service": name, "minions": {}}
    try:
        with _lock(name).held(jid=__opts__.get("jid"), what="fleet rollout"):
            return _rolling_update(client, summary, options)
    except (CommandExecutionError, SaltInvocationError) as err:
        _say(f"{name}: {err}")
        summary["comment"] = str(err)
        return _finish(summary, False)


def _plan(client, summary, options):
    """Ask the targeted minions what runs and how each would roll; plan the batches."""
    name, timeout = options.service, options.timeout
    status = client.cmd(
        options.tgt, "dockerops.status", [name], tgt_type=options.tgt_type, timeout=timeout
    )
    replicas = _fleet.replicas_running(status or {}, name)
    previews = {}
    if replicas:
        previews = client.cmd(
            sorted(replicas),
            "dockerops.rolling_update",
            [*options.module_args(), "test=True"],
            tgt_type="list",
            timeout=timeout,
        )
    plan = _fleet.plan_fleet(
        name,
        replicas,
        options.batch,
        options.min_healthy,
        options.canary,
        options.max_failures,
        loss_per_minion=_fleet.losses(previews or {}, replicas),
    )
    summary["plan"] = plan.describe()
    for minion in sorted(replicas):
        preview = (previews or {}).get(minion)
        if isinstance(preview, dict) and preview.get("plan"):
            summary["plan"].append(f"{minion}: " + "; ".join(preview["plan"]))
    return plan


def _rolling_update(client, summary, options):
    name, timeout = options.service, options.timeout
    plan = _plan(client, summary, options)
    for line in summary["plan"]:
        _say(line)
    if options.test:
        summary["comment"] = "test: nothing changed"
        return _finish(summary, True)

    updated, failures = [], 0
    silent = set()
    for number, members in enumerate(plan.batches, 1):
        label = "canary" if number == 1 and plan.canary else f"batch {number}/{len(plan.batches)}"
        healthy, answers = _healthy(client, plan.replicas, name, timeout)
        # LocalClient reports a minion that did not return as a message string.
        answered = {m for m, ret in answers.items() if isinstance(ret, dict)}
        for minion in sorted(set(plan.replicas) - answered - silent):
            # A minion that stopped answering has failed, wherever it was.
            silent.add(minion)
            failures += 1
            summary["minions"].setdefault(minion, {})
            summary["minions"][minion].update(
                result=False, comment=f"no answer within {timeout}s to dockerops.status"
            )
            _say(f"  {minion}: FAILED: no answer within {timeout}s")
        fleet_healthy = sum(healthy.values())
        reason = _fleet.stop_reason(plan, failures, fleet_healthy, label.split("/")[0])
        if reason:
            summary["comment"] = reason
            _say(reason)
            break
        _say(f"{label}: {', '.join(members)} ({fleet_healthy} healthy, floor {plan.floor})")
        results = _run_batch(
            client,
            [m for m in members if m not in silent],
            "dockerops.rolling_update",
            options.module_args(),
            timeout,
        )
        for minion, res in results.items():
            ret = res.get("return") if isinstance(res.get("return"), dict) else {}
            summary["minions"][minion] = {
                "from": ret.get("from"),
                "to": ret.get("to"),
                "result": res["result"],
                # The minion's own rollout; the batch's time when it did not say.
                "duration": ret.get("duration", res["duration"]),
                "comment": ret.get("comment") or res.get("comment"),
            }
            _say(
                f"  {minion}: {'ok' if res['result'] else 'FAILED'} "
                f"{ret.get('from')} -> {ret.get('to')} "
                f"({summary['minions'][minion]['duration']}s)"
                + ("" if res["result"] else f": {summary['minions'][minion]['comment']}")
            )
            if res["result"]:
                updated.append(minion)
            else:
                failures += 1
        if failures > plan.max_failures:
            summary["comment"] = (
                f"{failures} failed minion(s), over the failure budget of {plan.max_failures}: "
                f"stopped after {label}"
            )
            _say(summary["comment"])
            break
        if options.pause and number < len(plan.batches):
            time.sleep(options.pause)
    else:
        summary["comment"] = f"{name} rolled on {len(updated)} minion(s)"
        _say(summary["comment"])
        return _finish(summary, True)

    if options.rollback and updated:
        _roll_back(client, summary, options, updated, plan)
    return _finish(summary, False)


def _roll_back(client, summary, options, updated, plan):
    """Undo the updated minions, in the rollout's batch size, health-gated.

    Each batch's minions go back together (one call per earlier version).
    """
    size = max(len(b) for b in plan.batches[1:] or plan.batches)
    _say(f"rolling back {len(updated)} minion(s), {size} at a time")
    for start in range(0, len(updated), size):
        by_version = {}
        for minion in updated[start : start + size]:
            previous = summary["minions"][minion]["from"]
            if not previous or isinstance(previous, list):
                summary["minions"][minion]["rolled_back"] = False
                _say(f"  {minion}: not rolled back: it ran several versions before ({previous})")
                continue
            by_version.setdefault(previous, []).append(minion)
        for previous, minions in sorted(by_version.items()):
            args = options.module_args(tag=previous.rpartition(":")[2])
            results = _run_batch(client, minions, "dockerops.rolling_update", args, options.timeout)
            for minion in minions:
                ok = results[minion]["result"]
                summary["minions"][minion]["rolled_back"] = ok
                _say(f"  {minion}: rolled back to {previous}: {'ok' if ok else 'FAILED'}")


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
    are checked before every batch.

    CLI Example:

    .. code-block:: bash

        salt-run dockerops.apply tgt='prd-*' batch=2
        salt-run dockerops.apply tgt='prd-*' batch=25% service=web min_healthy=75%
    """
    client = _client()
    minions = sorted(client.cmd(tgt, "test.ping", tgt_type=tgt_type, timeout=timeout) or {})
    summary = {"minions": {}}
    if not minions:
        summary["comment"] = "no minion answered"
        return _finish(summary, False)
    try:
        size = _fleet.parse_amount(batch, len(minions), "batch") or 1
        budget = _fleet.parse_amount(max_failures, len(minions), "max_failures")
    except SaltInvocationError as err:
        summary["comment"] = str(err)
        return _finish(summary, False)
    batches = [minions[i : i + size] for i in range(0, len(minions), size)]
    floor = 0
    if service and min_healthy is not None:
        healthy, _ = _healthy(client, minions, service, timeout)
        try:
            floor = _fleet.parse_amount(min_healthy, sum(healthy.values()), "min_healthy")
        except SaltInvocationError as err:
            summary["comment"] = str(err)
            return _finish(summary, False)
    arg = ["dockerops"] + (["test=True"] if test else [])
    failures = 0
    for number, members in enumerate(batches, 1):
        if floor:
            healthy, _ = _healthy(client, minions, service, timeout)
            if sum(healthy.values()) < floor:
                summary["comment"] = f"{service}: below the healthy floor of {floor}: stopped"
                _say(summary["comment"])
                return _finish(summary, False)
        _say(f"batch {number}/{len(batches)}: {', '.join(members)}")
        results = _run_batch(client, members, "state.apply", arg, timeout)
        for minion, res in results.items():
            entry = {"result": res["result"], "duration": res["duration"]}
            if not res["result"]:
                entry["comment"] = res.get("comment")
            summary["minions"][minion] = entry
            _say(
                f"  {minion}: {'ok' if res['result'] else 'FAILED'} ({res['duration']}s)"
                + ("" if res["result"] else f": {res.get('comment')}")
            )
            failures += not res["result"]
        if failures > budget:
            summary["comment"] = f"{failures} failed minion(s): stopped after batch {number}"
            _say(summary["comment"])
            return _finish(summary, False)
        if pause and number < len(batches):
            time.sleep(float(pause))
    summary["comment"] = f"applied on {len(minions)} minion(s)"
    return _finish(summary, True)
