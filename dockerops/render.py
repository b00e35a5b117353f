"""Rendering config directories with Salt's own file server and templates.

The Salt-facing modules pass their ``__salt__`` in; nothing here reads Salt's
dunders. Templates see ``pillar``, ``grains``, ``salt`` and ``opts`` as in any
Salt template, plus ``service``, ``environment`` and ``file``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .config import RenderedConfig, render
from .errors import SpecError
from .spec import PILLAR_KEY, ServiceSpec

SaltFunctions = Mapping[str, Callable[..., Any]]


def render_service_config(
    spec: ServiceSpec, salt: SaltFunctions, saltenv: str = "base"
) -> RenderedConfig | None:
    """Render ``spec``'s config directory (no host writes), or None without one."""
    if spec.config is None:
        return None
    where = f"{PILLAR_KEY}:services:{spec.name}:config:files"
    by_source = {item.source: name for name, item in spec.config.files.items() if item.source}

    def fetch(source: str) -> str:
        text = salt["cp.get_file_str"](source, saltenv=saltenv)
        if text is False or text is None:
            name = by_source.get(source, "?")
            raise SpecError([f"{where}:{name}:source: {source} not found (saltenv {saltenv})"])
        return str(text)

    def render_template(text: str, template: str, name: str) -> str:
        try:
            out = salt["file.apply_template_on_contents"](
                text,
                template=template,
                context={"service": spec.name, "environment": spec.environment, "file": name},
                defaults=None,
                saltenv=saltenv,
            )
        except Exception as err:
            raise SpecError([f"{where}:{name}: template failed: {err}"]) from err
        if not isinstance(out, str):
            raise SpecError([f"{where}:{name}: template failed: {out}"])
        return out

    return render(spec.config, fetch, render_template)
