"""The ``salt.loader`` entry point: where Salt finds dockerops' modules.

Installed from a wheel, the Salt-facing modules live in ``dockerops/saltext/``
(setup.cfg maps the repository's ``_modules/``, ``_states/``, ``_grains/`` there).
From a source checkout (or an editable install) they are the repository's own
directories next to the package.
"""

from __future__ import annotations

from pathlib import Path

_KINDS = {
    "modules": "_modules",
    "states": "_states",
    "grains": "_grains",
    "runners": "_runners",
    "output": "_output",
    "beacons": "_beacons",
}


def salt_dirs() -> dict[str, list[str]]:
    """Map Salt loader kinds to the directories holding dockerops' modules."""
    package = Path(__file__).resolve().parent
    installed = package / "saltext"
    out: dict[str, list[str]] = {}
    for kind, repo_dir in _KINDS.items():
        candidate = installed / kind if installed.is_dir() else package.parent / repo_dir
        if candidate.is_dir():
            out[kind] = [str(candidate)]
    return out
