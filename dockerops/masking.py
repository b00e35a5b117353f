"""Masking secret values in anything dockerops shows (diffs, comments, logs, history).

A secret can reach output in more shapes than its literal value:

- whole, or escaped the way Python (``repr``), JSON or Go (``%q``, which runc
  and dockerd use in their errors) print strings: ``\\x00``, ``\\n``, ``\\"``;
- in pieces: a template renders a multi-line secret with ``indent()``, takes
  a slice of it, or wraps it at another width.

So :class:`Masker` hides, in this order: every whole value and each of its
escaped forms (any length), then every run of text that shares at least
:data:`FRAGMENT` characters with a secret or with one of its escaped forms,
then every line that is, stripped, one of the lines of a multi-line secret
(lines too short to be matched as fragments). It over-masks rather than
under-masks: an ordinary 8-character word that also occurs in a secret is
hidden too.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections.abc import Iterable

HIDDEN = "**********"
# Shortest piece of a secret that is hidden wherever it appears.
FRAGMENT = 8

_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def go_quote(value: str) -> str:
    """The inside of Go's ``strconv.Quote(value)`` (``%q``), without the quotes."""
    out = []
    for char in value:
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        elif char.isprintable() or unicodedata.category(char) == "Zs":
            out.append(char)
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


def escaped_forms(value: str) -> set[str]:
    """``value`` and the forms it takes when printed escaped by Python, JSON or Go."""
    forms = {
        value,
        repr(value)[1:-1],
        ascii(value)[1:-1],
        value.encode("unicode_escape").decode("ascii"),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        go_quote(value),
        # dockerd quotes runc's error, which quoted the value already.
        go_quote(go_quote(value)),
        json.dumps(go_quote(value))[1:-1],
    }
    return {form for form in forms if form}


class Masker:
    """Hides every secret of a set in text; build once, apply to many texts."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values = {s for s in secrets if isinstance(s, str) and s.strip()}
        needles: set[str] = set()
        grams: set[str] = set()
        lines: set[str] = set()
        for value in values:
            forms = escaped_forms(value)
            needles |= forms
            for form in forms:
                grams.update(form[i : i + FRAGMENT] for i in range(len(form) - FRAGMENT + 1))
            if "\n" in value.strip():
                lines.update(line.strip() for line in value.splitlines() if line.strip())
        # Longest first: a secret that contains another is hidden whole.
        ordered = sorted(needles, key=lambda n: (-len(n), n))
        self._needles = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._grams = frozenset(grams)
        self._lines = frozenset(lines)
        self.margin = max((len(n) for n in needles), default=0)

    def __bool__(self) -> bool:
        return self._needles is not None

    def __call__(self, text: str) -> str:
        if self._needles is None or not text:
            return text
        text = self._needles.sub(HIDDEN, text)
        text = self._mask_fragments(text)
        if self._lines:
            text = "".join(self._mask_line(line) for line in text.splitlines(keepends=True))
        return text

    def _mask_fragments(self, text: str) -> str:
        grams = self._grams
        if not grams or len(text) < FRAGMENT:
            return text
        spans: list[list[int]] = []
        for start in range(len(text) - FRAGMENT + 1):
            if text[start : start + FRAGMENT] in grams:
                end = start + FRAGMENT
                if spans and start <= spans[-1][1]:
                    spans[-1][1] = end
                else:
                    spans.append([start, end])
        if not spans:
            return text
        out, last = [], 0
        for start, end in spans:
            out.append(text[last:start])
            # Line breaks stay: the lines around a masked piece stay lines.
            out.append("\n".join(HIDDEN if part else "" for part in text[start:end].split("\n")))
            last = end
        out.append(text[last:])
        return "".join(out)

    def _mask_line(self, line: str) -> str:
        body = line.strip()
        if body not in self._lines:
            return line
        head = line[: len(line) - len(line.lstrip())]
        tail = line[len(line.rstrip()) :]
        return head + HIDDEN + tail


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret in ``secrets`` hidden (see :class:`Masker`)."""
    return Masker(secrets)(text)


# What a config diff shows of one file, at most (the rest is counted, not shown).
DIFF_CAP = 64 * 1024
# Files larger than this are not diffed line by line (difflib is quadratic).
DIFF_INPUT_LIMIT = 256 * 1024


def masked_contents(text: str, masker: Masker) -> str:
    """A new file's contents as shown: masked, capped at :data:`DIFF_CAP`."""
    window, rest = _window(text, masker)
    return _cap(masker(window), rest)


def masked_diff(old: str, new: str, masker: Masker, fromfile: str, tofile: str) -> str:
    """A unified diff of two versions of a file, masked (before diffing, so a
    multi-line secret is hidden whole), capped at :data:`DIFF_CAP`; empty when
    only masked text differs."""
    if max(len(old), len(new)) > DIFF_INPUT_LIMIT:
        return (
            f"(not diffed: {len(old.encode())} -> {len(new.encode())} bytes; files over "
            f"{DIFF_INPUT_LIMIT // 1024} KiB are not diffed)\n"
        )
    lines = difflib.unified_diff(
        masker(old).splitlines(keepends=True),
        masker(new).splitlines(keepends=True),
        fromfile=fromfile,
        tofile=tofile,
    )
    return _cap("".join(lines), 0)


def _window(text: str, masker: Masker) -> tuple[str, int]:
    """The start of ``text`` that is masked for showing, and how many lines follow it.

    The window reaches well past what can be shown, so a secret that starts
    inside the shown part is inside the window whole.
    """
    limit = DIFF_INPUT_LIMIT + 2 * masker.margin
    if len(text) <= limit:
        return text, 0
    cut = text.rfind("\n", 0, limit) + 1 or limit
    return text[:cut], text.count("\n", cut) + (0 if text.endswith("\n") else 1)


def _cap(text: str, more_lines: int) -> str:
    if more_lines == 0 and len(text) <= DIFF_CAP and len(text.encode()) <= DIFF_CAP:
        return text
    lines = text.splitlines(keepends=True)
    shown, size = [], 0
    for line in lines:
        size += len(line.encode())
        if size > DIFF_CAP:
            break
        shown.append(line)
    more = len(lines) - len(shown) + more_lines
    if shown and not shown[-1].endswith("\n"):
        shown.append("\n")
    return (
        "".join(shown)
        + f"... {more} more lines (output capped at {DIFF_CAP // 1024} KiB per file)\n"
    )
