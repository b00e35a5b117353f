"""Rendering config directories with Salt's own file server and templates.

The Salt-facing modules pass their ``__salt__`` in; nothing here reads Salt's
dunders. Templates see ``pillar``, ``grains``, ``salt`` and ``opts`` as in any
Salt template, plus ``service``, ``environment`` and ``file``.

A template's source may hold secrets (a pasted key, a value a pillar template
put there), so an error that quotes it never leaves here: Salt's
``SaltRenderError`` embeds the lines around the failing one, and Jinja's own
messages quote the tokens they choke on. Errors say the line and the kind of
failure, with anything quoted from the source elided, and secrets masked.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .config import RenderedConfig, render
from .errors import SpecError
from .etcd import EtcdClient, Snapshot, check_required, render_values
from .masking import Masker
from .spec import PILLAR_KEY, EtcdSettings, EtcdSource, ServiceSpec

SaltFunctions = Mapping[str, Callable[..., Any]]

# Salt logs a failed template with its source ("Rendering exception occurred").
_SALT_TEMPLATE_LOGGERS = ("salt.utils.templates", "salt.utils.jinja")
_QUOTED_RE = re.compile(r"'([^'\n]*)'|\"([^\"\n]*)\"")
# Quoted text this short is a token of Jinja's syntax ('}', '%}'), never a secret.
_SHORT_TOKEN = 3
_ELIDED = "'...'"


def render_service_config(
    spec: ServiceSpec,
    salt: SaltFunctions,
    saltenv: str = "base",
    etcd: EtcdSettings | None = None,
) -> RenderedConfig | None:
    """Render ``spec``'s config directory (no host writes), or None without one.

    Files from etcd (``etcd: {prefix, format}``) are read with ``etcd``'s
    settings (``dockerops:etcd``): every prefix once, all at one revision.
    """
    if spec.config is None:
        return None
    where = f"{PILLAR_KEY}:services:{spec.name}:config:files"
    by_source = {item.source: name for name, item in spec.config.files.items() if item.source}
    masker = Masker(spec.secret_values)

    def fetch(source: str) -> str:
        name = by_source.get(source, "?")
        try:
            text = salt["cp.get_file_str"](source, saltenv=saltenv)
        except UnicodeDecodeError as err:
            raise SpecError(
                [
                    f"{where}:{name}:source: {source} is not UTF-8 text (byte {err.start}); "
                    "config files are rendered as text"
                ]
            ) from None
        if text is False or text is None:
            raise SpecError([f"{where}:{name}:source: {source} not found (saltenv {saltenv})"])
        if isinstance(text, bytes):
            try:
                return text.decode("utf-8")
            except UnicodeDecodeError as err:
                raise SpecError(
                    [f"{where}:{name}:source: {source} is not UTF-8 text (byte {err.start})"]
                ) from None
        return str(text)

    def render_template(text: str, template: str, name: str, extra: dict[str, Any]) -> str:
        try:
            with _quiet_salt_template_logs():
                out = salt["file.apply_template_on_contents"](
                    text,
                    template=template,
                    context={
                        "service": spec.name,
                        "environment": spec.environment,
                        "file": name,
                        **extra,
                    },
                    defaults=None,
                    saltenv=saltenv,
                )
        except Exception as err:
            reason = template_error(err, text)
            raise SpecError([f"{where}:{name}: template failed: {masker(reason)}"]) from None
        if isinstance(out, Mapping) or not isinstance(out, str):
            raise SpecError([f"{where}:{name}: template failed ({template})"])
        if out.startswith("Traceback (most recent call last):"):
            # Salt returns the traceback as the "rendered" text when its own
            # wrapper fails (not the template); it quotes locals, so it is not shown.
            raise SpecError([f"{where}:{name}: template failed (Salt could not render it)"])
        return out

    snapshots: dict[str, Snapshot] = {}

    def from_store(name: str, source: EtcdSource) -> str:
        here = f"{where}:{name}:etcd"
        if etcd is None or not etcd.endpoints:
            raise SpecError([f"{here}: needs {PILLAR_KEY}:etcd:endpoints"])
        if not snapshots:
            # Every prefix of the service, each read once, all at one revision:
            # one config version never mixes two states of the store.
            prefixes = {item.prefix for item in spec.etcd_files.values()}
            snapshots.update(EtcdClient(etcd).get_prefixes(prefixes))
        snapshot = snapshots[source.prefix]
        check_required(snapshot.values, source.required, here)
        if source.format != "template":
            return render_values(source.format, snapshot.values, here)
        assert source.template is not None  # the spec pairs them
        text = fetch_template(source.template, name)
        return render_template(text, "jinja", name, {"values": snapshot.values})

    def fetch_template(source: str, name: str) -> str:
        by_source.setdefault(source, name)
        return fetch(source)

    return render(
        spec.config,
        fetch,
        lambda text, template, name: render_template(text, template, name, {}),
        from_store,
    )


def template_error(err: BaseException, source: str) -> str:
    """What went wrong in a template, without quoting its source.

    The line number and the message of the underlying Jinja (or other) error;
    text the message quotes that also occurs in the source is elided.
    """
    cause = _innermost(err)
    line = getattr(cause, "lineno", None) or getattr(err, "line_num", None)
    message = getattr(cause, "message", None) or str(cause) or type(cause).__name__
    message = str(message).splitlines()[0] if str(message).strip() else type(cause).__name__
    message = _elide_quoted(message, source)
    kind = type(cause).__name__
    where = f"line {line}: " if isinstance(line, int) else ""
    return f"{where}{kind}: {message}"


def _innermost(err: BaseException) -> BaseException:
    """The exception Salt's SaltRenderError wraps (it raises inside ``except``)."""
    seen = {id(err)}
    current = err
    while True:
        inner = current.__cause__ or current.__context__
        if inner is None or id(inner) in seen:
            return current
        seen.add(id(inner))
        current = inner


def _elide_quoted(message: str, source: str) -> str:
    def replace(match: re.Match[str]) -> str:
        quoted = match.group(1) if match.group(1) is not None else match.group(2)
        if len(quoted) <= _SHORT_TOKEN or quoted not in source:
            return match.group(0)
        return _ELIDED

    # A message that quotes the source unquoted (a whole line) is cut too.
    message = _QUOTED_RE.sub(replace, message)
    for line in source.splitlines():
        body = line.strip()
        if len(body) > _SHORT_TOKEN and body in message:
            message = message.replace(body, _ELIDED)
    return message


class _DropRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def _quiet_salt_template_logs() -> Iterator[None]:
    """Keep Salt's template loggers from writing a failing template's source to
    the minion log while dockerops renders one (the error is reported instead).
    Loggers are process-wide: records other threads log there meanwhile are
    dropped too, for the few milliseconds a render takes."""
    quiet = _DropRecords()
    loggers = [logging.getLogger(name) for name in _SALT_TEMPLATE_LOGGERS]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)
