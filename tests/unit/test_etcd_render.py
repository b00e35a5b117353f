"""The keys under an etcd prefix as a file (dockerops.etcd's pure renders):
json, yaml and env, required keys, and the errors that name the key, never
the value."""

from __future__ import annotations

import json

import pytest
import yaml

from dockerops.errors import SpecError
from dockerops.etcd import check_required, prefix_range_end, render_values

WHERE = "dockerops:services:web:config:files:app.json:etcd"


@pytest.mark.parametrize(
    ("fmt", "values", "expected"),
    [
        ("json", {}, "{}\n"),
        ("json", {"port": "80"}, '{\n  "port": "80"\n}\n'),
        (
            "json",
            {"db/port": "5432", "db/host": "db1", "name": "web"},
            '{\n  "db": {\n    "host": "db1",\n    "port": "5432"\n  },\n  "name": "web"\n}\n',
        ),
        ("json", {"a/b/c": "x"}, '{\n  "a": {\n    "b": {\n      "c": "x"\n    }\n  }\n}\n'),
        ("json", {"greeting": 'grüß\n"dich"'}, '{\n  "greeting": "grüß\\n\\"dich\\""\n}\n'),
        ("yaml", {}, "{}\n"),
        ("yaml", {"db/host": "db1", "db/port": "5432"}, "db:\n  host: db1\n  port: '5432'\n"),
        # Values stay strings: YAML quotes what it would read as another type.
        ("yaml", {"on": "true", "empty": ""}, "empty: ''\n'on': 'true'\n"),
        ("env", {}, ""),
        ("env", {"B": "2", "A": "x y=z", "_C9": ""}, "A=x y=z\nB=2\n_C9=\n"),
    ],
)
def test_values_render_sorted_and_deterministic(
    fmt: str, values: dict[str, str], expected: str
) -> None:
    out = render_values(fmt, values, WHERE)
    assert out == expected
    # Insertion order does not matter.
    assert render_values(fmt, dict(reversed(list(values.items()))), WHERE) == expected


def test_json_and_yaml_read_back_as_the_same_tree() -> None:
    values = {"db/host": "db1", "db/port": "5432", "feature/x": "on", "name": "ünï"}
    tree = {"db": {"host": "db1", "port": "5432"}, "feature": {"x": "on"}, "name": "ünï"}
    assert json.loads(render_values("json", values, WHERE)) == tree
    assert yaml.safe_load(render_values("yaml", values, WHERE)) == tree


@pytest.mark.parametrize("fmt", ["json", "yaml"])
@pytest.mark.parametrize(
    ("values", "problems"),
    [
        (
            {"db": "x", "db/host": "h", "db/port": "p"},
            ["etcd key db is both a value and the parent of db/host"],
        ),
        ({"a/b": "1", "a/b/c": "2"}, ["etcd key a/b is both a value and the parent of a/b/c"]),
        (
            {"x": "1", "x/y": "2", "z": "3", "z/w": "4"},
            [
                "etcd key x is both a value and the parent of x/y",
                "etcd key z is both a value and the parent of z/w",
            ],
        ),
        ({"a//b": "1"}, ["etcd key 'a//b' has an empty part"]),
        ({"/a": "1"}, ["etcd key '/a' has an empty part"]),
        ({"a/": "1"}, ["etcd key 'a/' has an empty part"]),
        ({"": "1"}, ["etcd key '' has an empty part"]),
    ],
)
def test_nesting_conflicts_name_every_key(
    fmt: str, values: dict[str, str], problems: list[str]
) -> None:
    with pytest.raises(SpecError) as err:
        render_values(fmt, values, WHERE)
    assert len(err.value.problems) == len(problems)
    for found, expected in zip(err.value.problems, problems, strict=True):
        assert found.startswith(f"{WHERE}: {expected}"), found


def test_a_sibling_that_sorts_between_a_value_and_its_child_still_conflicts() -> None:
    # "db-x" sorts between "db" and "db/host" ('-' < '/').
    with pytest.raises(SpecError) as err:
        render_values("json", {"db": "1", "db-x": "2", "db/host": "3"}, WHERE)
    assert err.value.problems == [f"{WHERE}: etcd key db is both a value and the parent of db/host"]


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"db/host": "x"}, "etcd key 'db/host' is not an environment variable name"),
        ({"9LIVES": "x"}, "etcd key '9LIVES' is not an environment variable name"),
        ({"A-B": "x"}, "etcd key 'A-B' is not an environment variable name"),
        ({"": "x"}, "etcd key '' is not an environment variable name"),
        ({"TOKEN": "line1\nline2"}, "etcd key TOKEN: its value holds a line break or NUL"),
        ({"TOKEN": "a\rb"}, "etcd key TOKEN: its value holds a line break or NUL"),
        ({"TOKEN": "a\0b"}, "etcd key TOKEN: its value holds a line break or NUL"),
    ],
)
def test_env_errors_name_the_key_never_the_value(values: dict[str, str], says: str) -> None:
    with pytest.raises(SpecError) as err:
        render_values("env", {"OK": "fine", **values}, WHERE)
    (problem,) = err.value.problems
    assert problem.startswith(f"{WHERE}: {says}"), problem
    for value in values.values():
        if value:
            assert value not in str(err.value)


def test_env_reports_every_bad_key_at_once() -> None:
    with pytest.raises(SpecError) as err:
        render_values("env", {"a.b": "1", "GOOD": "2", "C": "x\ny"}, WHERE)
    assert [p.removeprefix(f"{WHERE}: ") for p in err.value.problems] == [
        "etcd key C: its value holds a line break or NUL, which an env file cannot hold",
        "etcd key 'a.b' is not an environment variable name "
        "(letters, digits and '_', not starting with a digit)",
    ]


@pytest.mark.parametrize("fmt", ["template", "toml", ""])
def test_other_formats_are_not_rendered_here(fmt: str) -> None:
    with pytest.raises(ValueError, match="json, yaml or env"):
        render_values(fmt, {"a": "1"}, WHERE)


def test_required_keys_present() -> None:
    check_required({"db/host": "x", "port": "1"}, ["db/host", "port"], WHERE)
    check_required({}, [], WHERE)


def test_every_missing_required_key_is_listed() -> None:
    with pytest.raises(SpecError) as err:
        check_required({"db/host": "x"}, ["db/host", "db/port", "name"], WHERE)
    assert err.value.problems == [
        f"{WHERE}:required: db/port is not in etcd (under the prefix)",
        f"{WHERE}:required: name is not in etcd (under the prefix)",
    ]


def test_a_required_key_with_an_empty_value_is_present() -> None:
    check_required({"flag": ""}, ["flag"], WHERE)


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        (b"/myapp/prod/", b"/myapp/prod0"),
        (b"/a", b"/b"),
        (b"/a\xff", b"/b"),
        (b"/a\xff\xff", b"/b"),
        (b"\xff", b"\0"),
    ],
)
def test_the_range_end_of_a_prefix(prefix: bytes, end: bytes) -> None:
    assert prefix_range_end(prefix) == end


def test_etcd_errors_are_store_errors_and_the_etcd_modules_import_no_salt() -> None:
    import ast
    from pathlib import Path

    from salt.exceptions import CommandExecutionError

    from dockerops import errors
    from dockerops.etcd import EtcdError

    store_error = errors.StoreError
    assert issubclass(store_error, CommandExecutionError)
    assert issubclass(EtcdError, store_error)
    assert store_error.__doc__ and "key-value store failed" in store_error.__doc__
    library = Path(__file__).resolve().parents[2] / "dockerops"
    for module in ("etcd.py", "etcdwatch.py"):
        tree = ast.parse((library / module).read_text())
        imported = [
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        ] + [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not [name for name in imported if name.split(".")[0] == "salt"], module
