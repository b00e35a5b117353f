"""Observed restart counts, kept between runs so a crash loop can be timed.

Docker keeps only a container's running ``RestartCount``; to say "3 restarts
within 5 minutes" dockerops notes the count each time it looks (status, the
beacon) in one small JSON file per service under the state dir
(``restarts/<service>.json``: container id -> ``[[unix time, count], ...]``),
replaced atomically. Losing a sample (a concurrent writer, an unwritable
state dir) only makes the count a lower bound; it never invents restarts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

from .monitoring import Sample, record_sample
from .records import StateDirError, read_mapping, save_json
from .spec import check_service_name


class RestartSamples:
    """One service's samples, per container id."""

    def __init__(self, base: str | Path, service: str) -> None:
        # The name becomes a file name: never a path (``..``, ``/``) or empty.
        self.path = Path(base) / "restarts" / f"{check_service_name(service)}.json"
        self.service = service

    def load(self) -> dict[str, list[Sample]]:
        out: dict[str, list[Sample]] = {}
        for container_id, samples in read_mapping(self.path).items():
            try:
                out[str(container_id)] = [(float(t), int(c)) for t, c in samples]
            except (TypeError, ValueError):
                continue  # a damaged entry: start that container afresh
        return out

    def observe(
        self, counts: Mapping[str, int], now: float, window: float
    ) -> dict[str, list[Sample]]:
        """Add ``counts`` (container id -> RestartCount now) and return every
        listed container's samples, this one included. Containers not listed
        are forgotten. Saving is best effort (see the module's docstring)."""
        known = self.load()
        out = {cid: record_sample(known.get(cid, []), now, n, window) for cid, n in counts.items()}
        if any(_worth_saving(known.get(cid, []), out[cid], window) for cid in out) or set(
            out
        ) != set(known):
            # Best effort: the next look records again.
            with contextlib.suppress(StateDirError):
                save_json(f"the restart samples of service {self.service}", self.path, out)
        return out


def _worth_saving(before: list[Sample], after: list[Sample], window: float) -> bool:
    """Whether ``after`` says more than the saved ``before``: a new count, a
    sample gone out of the window, or the last sample's time refreshed after
    a quarter window (a count that stays the same is not rewritten, and
    fsynced, at every look)."""
    if len(before) != len(after) or [c for _, c in before] != [c for _, c in after]:
        return True
    if before[:-1] != after[:-1]:
        return True
    return bool(after) and after[-1][0] - before[-1][0] >= window / 4
