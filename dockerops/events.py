"""Events in and out of a rollout.

In: :class:`Wakeup`, the rollout loop's sleep, cut short by Docker's events for
the service's containers. Out: :func:`event_progress`, the :data:`Progress`
callback that logs each rollout step and hands it to Salt's ``event.send``,
and :func:`event_bus_listens`, whether such an event reaches anyone.

The last two are for the Salt faces (``_modules``/``_states``), which both
need them; they live here because neither imports Salt (they take ``opts``
and ``send`` as arguments) and the faces cannot share code other than the
library.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .replicas import LABEL_SERVICE

if TYPE_CHECKING:
    from .host import DockerHost

# A rollout step: its stage ("batch", "replica", ...) and what it is about.
Progress = Callable[[str, dict[str, Any]], None]
# Operators filter rollout logs by this name: it stays what it always was.
log = logging.getLogger("dockerops.rollout")


def quiet(_stage: str, _data: dict[str, Any]) -> None:
    """A :data:`Progress` that tells no one."""


class Wakeup:
    """Sleeps like ``time.sleep``, but wakes as soon as Docker reports an event
    (a health status, a start, a die...) for one service's containers.

    The rollout loop polls with it: it notices a replacement turning healthy
    or unhealthy, or an old replica gone, at once instead of up to a poll
    interval later, and still polls when no event comes. Without an events
    stream it just sleeps, with ``sleep`` (a simulated clock's, in tests).
    """

    def __init__(
        self, host: DockerHost, service: str, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._woken = threading.Event()
        self._sleep = sleep
        self._stream: Any = None
        try:
            self._stream = host.api.events(
                filters={"type": "container", "label": f"{LABEL_SERVICE}={service}"},
                decode=True,
            )
        except Exception:
            return
        threading.Thread(target=self._pump, name=f"dockerops-events-{service}", daemon=True).start()

    def _pump(self) -> None:
        with contextlib.suppress(Exception):  # a closed or broken stream ends it
            for _event in self._stream:
                self._woken.set()

    def sleep(self, seconds: float) -> None:
        if self._stream is None:
            self._sleep(seconds)
            return
        self._woken.wait(seconds)
        self._woken.clear()

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()


def event_bus_listens(opts: Mapping[str, Any]) -> bool:
    """Whether an event sent now reaches anyone.

    Under ``salt-call --local`` with no minion daemon there is no event bus, and
    Salt's ``event.send`` spends a second per event failing to reach it.
    """
    local = (
        opts.get("local")
        or opts.get("file_client") == "local"
        or opts.get("master_type") == "disable"
    )
    if not local or opts.get("ipc_mode", "ipc") != "ipc":
        return True
    sock_dir = opts.get("sock_dir")
    if not sock_dir:
        return True
    return bool(glob.glob(os.path.join(str(sock_dir), "minion_event_*_pull.ipc")))


def event_progress(send: Callable[[str, dict[str, Any]], Any] | None, service: str) -> Progress:
    """A :data:`Progress` that logs each step and fires it as an event.

    Events are tagged ``dockerops/rollout/<service>/<stage>`` and numbered
    (``seq`` from 1): a minion forwards events to the master concurrently, so
    they may arrive out of order. ``send`` is Salt's ``event.send`` (None: log
    only). An event that cannot be sent never breaks the rollout.
    """
    counter = itertools.count(1)

    def fire(stage: str, data: dict[str, Any]) -> None:
        details = " ".join(f"{key}={value}" for key, value in data.items())
        log.info("dockerops rollout %s: %s %s", service, stage, details)
        if send is None:
            return
        try:
            body = {"service": service, "seq": next(counter), **data}
            send(f"dockerops/rollout/{service}/{stage}", body)
        except Exception as err:
            log.debug("dockerops: event %s not sent: %s", stage, err)

    return fire
