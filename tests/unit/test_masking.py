"""dockerops.masking: every shape a secret takes in output is hidden; diffs are capped."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jinja2
import pytest

from dockerops.config import ConfigStore, RenderedConfig, RenderedFile, version_of
from dockerops.masking import (
    DIFF_CAP,
    HIDDEN,
    Masker,
    escaped_forms,
    go_quote,
    masked_contents,
    redact,
)
from dockerops.render import template_error

KEY = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
    "Zq1cXk9vT2yJ8aP0eR4mN6sL3uW5oB7dF1gH2jK4lM9nQ0rS8tV\n"
    "kf0=\n"
    "-----END PRIVATE KEY-----"
)
PARTS = [line for line in KEY.splitlines()]
TOKEN = 'tok"en\\with-quotes-and-tab\there'


def leaked(text: str, secret: str) -> list[str]:
    """Lines (of 4+ characters) of ``secret`` still in ``text``."""
    return [
        part.strip()
        for part in secret.splitlines()
        if len(part.strip()) >= 4 and part.strip() in text
    ]


@pytest.mark.parametrize("width", [2, 4, 8])
def test_a_multi_line_secret_rendered_with_indent_is_masked_line_by_line(width: int) -> None:
    rendered = (
        jinja2.Environment()
        .from_string("tls:\n  key: |\n{{ key | indent(width, true) }}\n  port: 443\n")
        .render(key=KEY, width=width)
    )
    assert KEY not in rendered  # indent() changed it: a whole-value replace misses it

    masked = redact(rendered, [KEY])

    assert leaked(masked, KEY) == []
    assert "kf0=" not in masked  # a short line of a multi-line secret, alone on its line
    assert "port: 443" in masked and "tls:" in masked


@pytest.mark.parametrize(
    "rendering",
    [
        KEY[40:90],  # a slice
        KEY.replace("\n", ""),  # joined
        "\n".join(textwrap.wrap(KEY.replace("\n", ""), 30)),  # re-wrapped at another width
    ],
)
def test_pieces_of_a_secret_of_eight_characters_or_more_are_masked(rendering: str) -> None:
    masked = redact(f"before {rendering} after", [KEY])

    body = KEY.replace("\n", "")
    windows = [masked[start : start + 8] for start in range(len(masked) - 7)]
    assert [w for w in windows if w in body and "*" not in w] == [], masked


@pytest.mark.parametrize(
    "form",
    [
        repr(TOKEN)[1:-1],
        json.dumps(TOKEN)[1:-1],
        go_quote(TOKEN),
        go_quote(KEY),
        json.dumps(KEY)[1:-1],
        repr(KEY)[1:-1],
        go_quote(go_quote(TOKEN)),
    ],
)
def test_escaped_forms_are_masked(form: str) -> None:
    text = f'runc: exec: "{form}": invalid argument'

    masked = redact(text, [TOKEN, KEY])

    assert form not in masked
    assert masked.startswith("runc: exec: ") and masked.endswith(": invalid argument")


def test_go_quote_matches_go() -> None:
    # strconv.Quote("a\x00b\"c\\d\n\té\u200b") in Go.
    assert go_quote('a\x00b"c\\d\n\té\u200b') == 'a\\x00b\\"c\\\\d\\n\\té\\u200b'


def test_escaped_forms_include_the_value() -> None:
    assert "plain" in escaped_forms("plain")


def test_short_secrets_are_masked_whole_only() -> None:
    masker = Masker(["5432", "true"])

    assert masker("port=5432 ssl=true") == f"port={HIDDEN} ssl={HIDDEN}"
    assert masker("nothing 543 tru") == "nothing 543 tru"


def test_blank_secrets_mask_nothing() -> None:
    assert redact("a b\n\tc", [" ", "\n", ""]) == "a b\n\tc"


# --- diffs -----------------------------------------------------------------------------------


def rendered(files: dict[str, str]) -> RenderedConfig:
    items = tuple(RenderedFile(name, text.encode(), 0o644) for name, text in sorted(files.items()))
    return RenderedConfig(items, version_of(items))


def test_config_diff_masks_an_indented_secret(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "config")
    template = jinja2.Environment().from_string("key: |\n{{ key | indent(2, true) }}\n")
    old = rendered({"tls.yaml": template.render(key=KEY)})
    store.write(old)
    store.activate(old.version)
    new_key = KEY.replace("MIIE", "MIIF")

    changes = store.diff(rendered({"tls.yaml": template.render(key=new_key)}), [new_key, KEY])

    text = json.dumps(changes)
    assert leaked(text, KEY) == [] and leaked(text, new_key) == [], text


def test_a_huge_added_file_is_capped_and_says_so(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "config")
    line = "x" * 99 + "\n"
    big = line * (50 * 1024 * 1024 // len(line))  # 50 MB

    changes = store.diff(rendered({"big.txt": big}), ["some-secret-value"])

    shown = changes["big.txt"]["added"]  # type: ignore[index]
    assert len(shown.encode()) <= DIFF_CAP + 200
    more = big.count("\n") - shown.count("\n") + 1
    assert shown.endswith(f"... {more} more lines (output capped at 64 KiB per file)\n"), shown[
        -200:
    ]


def test_a_huge_changed_file_is_not_diffed(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "config")
    old = rendered({"big.txt": "a\n" * 300_000})
    store.write(old)
    store.activate(old.version)

    changes = store.diff(rendered({"big.txt": "b\n" * 300_000}))

    diff = changes["big.txt"]["diff"]  # type: ignore[index]
    assert diff.startswith("(not diffed: 600000 -> 600000 bytes; files over 256 KiB")


def test_a_long_diff_is_capped(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "config")
    old = rendered({"f": "".join(f"line {i} old\n" for i in range(10_000))})
    store.write(old)
    store.activate(old.version)

    changes = store.diff(rendered({"f": "".join(f"line {i} new\n" for i in range(10_000))}))

    diff = changes["f"]["diff"]  # type: ignore[index]
    assert len(diff.encode()) <= DIFF_CAP + 200
    assert "more lines (output capped at 64 KiB per file)" in diff.splitlines()[-1]


def test_masked_contents_masks_a_secret_straddling_the_cap() -> None:
    secret = "S" * 20 + "-straddling-secret-" + "T" * 20
    text = "a" * (DIFF_CAP - 30) + secret + "\n" + "b\n" * 10

    shown = masked_contents(text, Masker([secret]))

    assert "straddling" not in shown and "SSSSSSSS" not in shown


# --- template errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "password = {{ hunter2-s3cret-literal }\n",
        "a\nb\n{% if x %}password = pasted-s3cret-v4lue\n",
        "{{ pasted-s3cret-v4lue | nosuchfilter }}\n",
        "x = {% pasted_s3cret_v4lue %}\n",
    ],
)
def test_template_errors_quote_no_source(source: str) -> None:
    try:
        jinja2.Environment().from_string(source).render(x=True)
    except jinja2.TemplateError as err:
        message = template_error(err, source)
    else:
        pytest.fail("the template rendered")

    assert "s3cret" not in message, message
    assert message.startswith("line "), message
