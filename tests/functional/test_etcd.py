"""Config from etcd against a real etcd (Debian's etcd-server on 127.0.0.1):
reads at one revision, the watch, failover, compaction, token auth, and the
``dockerops_etcd`` beacon through Salt's beacon loader."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dockerops.etcd
from dockerops.errors import SpecError
from dockerops.etcd import EtcdClient, EtcdError
from dockerops.spec import EtcdSettings
from tests.support.etcd import Etcd, make_tls

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def prefix() -> str:
    """A prefix of this test's own in the shared etcd."""
    return f"/t{random.randrange(16**6):06x}/"


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[Etcd]:
    """An etcd of this test's own: to compact, stop, or put under authentication."""
    server = Etcd(tmp_path).start()
    yield server
    server.stop()


def client(*urls: str, **settings: Any) -> EtcdClient:
    return EtcdClient(EtcdSettings(endpoints=list(urls), timeout=2, **settings))


@pytest.fixture
def closed_port() -> Iterator[str]:
    """An endpoint on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


def test_a_prefix_is_read_at_one_revision_relative_to_it(etcd: Etcd, prefix: str) -> None:
    etcd.put(prefix + "db/host", "db1")
    etcd.put(prefix + "port", "80")
    etcd.put(prefix[:-1], "not under the prefix")
    last = etcd.put(prefix[:-1] + "x/y", "a sibling, not under it")

    snapshot = client(etcd.url).get_prefix(prefix)

    assert snapshot.values == {"db/host": "db1", "port": "80"}
    assert snapshot.revision == last
    assert client(etcd.url).get_prefix(prefix + "nothing/").values == {}


def test_pages_are_read_at_the_first_pages_revision(
    etcd: Etcd, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in "abcde":
        before = etcd.put(prefix + name, "old")
    monkeypatch.setattr(dockerops.etcd, "PAGE_SIZE", 2)
    reader = client(etcd.url)
    pages: list[int] = []
    call = reader._call

    def between_pages(path: str, body: Any) -> Any:
        answer = call(path, body)
        pages.append(len(answer.get("kvs") or []))
        if len(pages) == 1:  # the store changes after the first page
            etcd.put(prefix + "e", "new")
            etcd.put(prefix + "f", "new")
            etcd.delete(prefix + "d")
        return answer

    monkeypatch.setattr(reader, "_call", between_pages)
    snapshot = reader.get_prefix(prefix)

    assert pages == [2, 2, 1]
    assert snapshot.revision == before
    assert snapshot.values == {name: "old" for name in "abcde"}


def test_a_read_whose_revision_is_compacted_between_pages_starts_again(
    own_etcd: Etcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in "abc":
        own_etcd.put("/app/" + name, "old")
    monkeypatch.setattr(dockerops.etcd, "PAGE_SIZE", 2)
    reader = client(own_etcd.url)
    call = reader._call
    compacted: list[int] = []

    def between_pages(path: str, body: Any) -> Any:
        answer = call(path, body)
        if not compacted:
            own_etcd.put("/app/c", "new")
            compacted.append(own_etcd.put("/app/d", "new"))
            own_etcd.compact(compacted[0])
        return answer

    monkeypatch.setattr(reader, "_call", between_pages)
    snapshot = reader.get_prefix("/app/")

    assert snapshot.revision == compacted[0]
    assert snapshot.values == {"a": "old", "b": "old", "c": "new", "d": "new"}


def test_a_value_that_is_not_utf8_is_an_error_naming_the_key(etcd: Etcd, prefix: str) -> None:
    etcd.put(prefix + "ok", "fine")
    etcd.put(prefix + "blob", b"\xff\xfesecret-bytes")

    with pytest.raises(EtcdError) as err:
        client(etcd.url).get_prefix(prefix)

    assert err.value.kind == "bad_value"
    assert f"etcd key {prefix}blob: its value is not UTF-8 text" in str(err.value)
    assert "secret-bytes" not in str(err.value)


def test_an_unreachable_endpoint_is_an_error_and_the_next_one_answers(
    etcd: Etcd, prefix: str, closed_port: str
) -> None:
    etcd.put(prefix + "k", "v")

    with pytest.raises(EtcdError) as err:
        client(closed_port).get_prefix(prefix)
    assert err.value.kind == "unreachable"
    assert str(err.value) == f"etcd unreachable ({closed_port}: connection refused)"

    both = client(closed_port, etcd.url)
    assert both.get_prefix(prefix).values == {"k": "v"}
    assert both.watch([prefix], both.current_revision() + 1, 0.2).changed == frozenset()


def test_an_endpoint_that_never_answers_times_out(etcd: Etcd, prefix: str) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), answers nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(EtcdError) as err:
            EtcdClient(EtcdSettings(endpoints=[url], timeout=0.3)).get_prefix(prefix)
        assert time.monotonic() - started < 2
        assert (err.value.kind, str(err.value)) == (
            "timeout",
            f"etcd unreachable ({url}: timed out)",
        )
        etcd.put(prefix + "k", "v")
        failover = EtcdClient(EtcdSettings(endpoints=[url, etcd.url], timeout=0.3))
        assert failover.get_prefix(prefix).values == {"k": "v"}


def test_tls_with_a_private_ca_and_a_client_certificate(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    server = Etcd(tmp_path, tls).start()
    try:
        server.put("/app/k", "v")
        files = {
            "ca_file": str(tls.ca),
            "cert_file": str(tls.client_cert),
            "key_file": str(tls.client_key),
        }
        assert client(server.url, **files).get_prefix("/app/").values == {"k": "v"}

        with pytest.raises(EtcdError) as err:  # the system's CAs do not know this one
            client(server.url).get_prefix("/app/")
        assert err.value.kind == "unreachable"
        assert f"{server.url}: TLS: CERTIFICATE_VERIFY_FAILED" in str(err.value)

        with pytest.raises(EtcdError) as err:  # no client certificate
            client(server.url, ca_file=str(tls.ca)).get_prefix("/app/")
        assert err.value.kind == "unreachable", err.value

        with pytest.raises(SpecError) as spec_err:
            client(server.url, ca_file=str(tmp_path / "none.crt"))
        assert spec_err.value.problems[0].startswith(f"dockerops:etcd:ca_file: {tmp_path}")
    finally:
        server.stop()


def test_a_watch_from_a_revision_sees_exactly_the_changes_after_it(etcd: Etcd, prefix: str) -> None:
    other = prefix[:-1] + "-other/"
    quiet = prefix[:-1] + "-quiet/"
    etcd.put(prefix + "gone", "1")
    etcd.put(prefix + "before", "1")
    watcher = client(etcd.url)
    seen = watcher.current_revision(prefix)
    etcd.put(prefix + "a", "1")
    etcd.put(prefix + "a", "2")
    etcd.delete(prefix + "gone")
    etcd.put(other + "x", "1")
    now = etcd.put(prefix[:-1], "beside the prefix")

    result = watcher.watch([prefix, other, quiet], seen + 1, 1.0)

    assert result.revision == now
    assert not result.compacted
    assert result.changed == {prefix, other}
    assert result.keys == {prefix: (prefix + "a", prefix + "gone"), other: (other + "x",)}

    # From the revision after: nothing, and at once (every watcher is caught up).
    started = time.monotonic()
    again = watcher.watch([prefix, other, quiet], result.revision + 1, 1.0)
    assert time.monotonic() - started < 0.5
    assert (again.revision, again.changed) == (now, frozenset())


def test_a_compacted_start_revision_is_reported(own_etcd: Etcd) -> None:
    first = own_etcd.put("/app/a", "1")
    own_etcd.put("/app/a", "2")
    last = own_etcd.put("/other/b", "1")
    own_etcd.compact(last)
    watcher = client(own_etcd.url)

    result = watcher.watch(["/app/", "/other/"], first + 1, 1.0)

    assert result.compacted
    assert result.revision == last
    assert result.changed == {"/app/", "/other/"}
    # From the compaction's revision on, the history is there again.
    assert not watcher.watch(["/app/"], last, 0.3).compacted
    assert watcher.watch(["/app/"], last + 1, 0.3).changed == frozenset()


def test_a_store_behind_the_remembered_revision_counts_as_compacted(own_etcd: Etcd) -> None:
    last = own_etcd.put("/app/a", "1")
    result = client(own_etcd.url).watch(["/app/"], last + 10, 0.3)
    assert (result.compacted, result.revision, result.changed) == (True, last, {"/app/"})


def test_token_authentication(own_etcd: Etcd) -> None:
    own_etcd.put("/app/db/host", "db1")
    own_etcd.put("/secret/key", "k")
    own_etcd.enable_auth("root-pw-1")
    own_etcd.add_user("app", "app-pw-Zq9", "app-reader", "/app/")

    reader = client(own_etcd.url, username="app", password="app-pw-Zq9")
    assert reader.get_prefix("/app/").values == {"db/host": "db1"}

    for wrong in (
        lambda: client(own_etcd.url, username="app", password="wrong-pw-Xy7").get_prefix("/app/"),
        lambda: client(own_etcd.url).get_prefix("/app/"),
        lambda: reader.get_prefix("/secret/"),
        lambda: reader.watch(["/secret/"], 1, 0.2),
    ):
        with pytest.raises(EtcdError) as err:
            wrong()
        assert err.value.kind == "auth", err.value
        assert own_etcd.url in str(err.value)
        for secret in ("wrong-pw-Xy7", "app-pw-Zq9", "root-pw-1"):
            assert secret not in str(err.value)

    # etcd drops the user's tokens when its password is set (to the same one):
    # the client authenticates again, once, and goes on.
    revision = own_etcd.put("/app/port", "80")
    own_etcd.call("/v3/auth/user/changepw", {"name": "app", "password": "app-pw-Zq9"})
    assert reader.get_prefix("/app/").values == {"db/host": "db1", "port": "80"}
    own_etcd.call("/v3/auth/user/changepw", {"name": "app", "password": "app-pw-Zq9"})
    assert reader.watch(["/app/"], revision, 0.3).keys == {"/app/": ("/app/port",)}


def beacon_opts(tmp_path: Path, pillar: dict[str, Any]) -> dict[str, Any]:
    import salt.config

    opts = salt.config.minion_config(None)
    opts.update(
        {
            "id": "etcd-functional",
            "root_dir": str(tmp_path),
            "cachedir": str(tmp_path / "cache"),
            "pki_dir": str(tmp_path / "pki"),
            "sock_dir": str(tmp_path / "sock"),
            "extension_modules": str(tmp_path / "extmods"),
            "file_client": "local",
            "beacons_dirs": [str(REPO / "_beacons")],
            "dockerops.state_dir": str(tmp_path / "state"),
            "pillar": pillar,
        }
    )
    return opts


def etcd_service(prefix: str) -> dict[str, Any]:
    return {
        "image": "registry.example.com/app",
        "config": {"path": "/etc/app", "files": {"app.json": {"etcd": {"prefix": prefix}}}},
    }


def test_the_beacon_fires_once_for_the_service_whose_keys_changed(
    own_etcd: Etcd, tmp_path: Path
) -> None:
    from salt.loader import beacons

    pillar = {
        "dockerops": {
            "etcd": {"endpoints": [own_etcd.url], "timeout": "2s"},
            "services": {
                "web": etcd_service("/web/prod/"),
                "api": etcd_service("/api/prod/"),
                "plain": {"image": "registry.example.com/plain"},
            },
        }
    }
    opts = beacon_opts(tmp_path, pillar)
    config = [{"interval": 10}]
    assert beacons(opts, {})["dockerops_etcd.validate"](config) == (
        True,
        "Valid beacon configuration",
    )

    def look(loader: Any = None) -> list[dict[str, Any]]:
        found = (loader or beacon)(config)
        for event in found:
            assert isinstance(event.pop("time"), float)
        return found

    own_etcd.put("/web/prod/db/host", "db1")
    beacon = beacons(opts, {})["dockerops_etcd.beacon"]
    assert look() == []  # the baseline
    own_etcd.put("/web/prod/db/host", "db2")
    own_etcd.put("/web/prod/port", "80")
    revision = own_etcd.delete("/web/prod/db/host")
    own_etcd.put("/elsewhere/x", "1")

    assert look() == [
        {
            "tag": "web/changed",
            "event": "changed",
            "service": "web",
            "files": ["app.json"],
            "keys": ["/web/prod/db/host", "/web/prod/port"],
            "keys_total": 2,
            "revision": revision + 1,
            "compacted": False,
        }
    ]
    assert look() == []  # once, not at every pass

    # etcd away: said once, to each service; nothing is missed meanwhile.
    own_etcd.stop()
    down = look()
    assert [e["tag"] for e in down] == ["api/unreachable", "web/unreachable"]
    assert {e["kind"] for e in down} == {"unreachable"}
    assert look() == []
    own_etcd.start()
    own_etcd.put("/api/prod/key", "v")
    back = look()
    assert [e["tag"] for e in back] == ["api/reachable", "web/reachable", "api/changed"]
    assert back[2]["keys"] == ["/api/prod/key"]

    # A minion restart (a new loader, its memory read from the state dir): nothing twice.
    assert look(beacons(opts, {})["dockerops_etcd.beacon"]) == []


@pytest.mark.parametrize(
    "config",
    [
        {},
        [{"services": "web"}],
        [{"services": ["Web!"]}],
        [{"wait": 0}],
        [{"wait": 6}],
        [{"wait": "1s"}],
    ],
)
def test_bad_beacon_configs_are_refused(tmp_path: Path, config: Any) -> None:
    from salt.loader import beacons

    ok, _ = beacons(beacon_opts(tmp_path, {}), {})["dockerops_etcd.validate"](config)
    assert ok is False
