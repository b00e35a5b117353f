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


def test_a_watch_whose_wait_ends_before_etcd_caught_up_asks_the_keyspace(
    etcd: Etcd, prefix: str
) -> None:
    # wait 0: no catch-up answer is read at all; whether each prefix changed in
    # the window then comes from the keyspace (a put, a delete, or nothing).
    put, deleted, quiet = prefix + "put/", prefix + "deleted/", prefix + "quiet/"
    etcd.put(deleted + "k", "1")
    etcd.put(quiet + "k", "1")
    watcher = client(etcd.url)
    seen = watcher.current_revision()
    etcd.put(put + "k", "1")
    etcd.delete(deleted + "k")
    etcd.put(prefix[:-1] + "-elsewhere", "1")
    result = watcher.watch([put, deleted, quiet], seen + 1, 0)
    assert result.changed == {put, deleted}
    assert not result.compacted


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


# -- bounds: what one prefix, one answer and one beacon pass may take ----------


def test_a_prefix_over_the_total_size_cap_is_too_large_however_it_is_paged(
    etcd: Etcd, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in "abcde":
        etcd.put(prefix + name, "v" * 40)
    monkeypatch.setattr(dockerops.etcd, "PAGE_SIZE", 2)  # each page well under any cap
    monkeypatch.setattr(dockerops.etcd, "MAX_PREFIX_BYTES", 150)

    with pytest.raises(EtcdError) as err:
        client(etcd.url).get_prefix(prefix)

    assert err.value.kind == "bad_value"
    assert str(err.value) == (
        f"the keys under {prefix} hold more than 150 bytes of keys and values: "
        "too large for a config file"
    )
    monkeypatch.setattr(dockerops.etcd, "MAX_PREFIX_BYTES", 5 * (len(prefix) + 41))
    assert len(client(etcd.url).get_prefix(prefix).values) == 5


def test_an_answer_over_the_size_cap_says_so(
    etcd: Etcd, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    etcd.put(prefix + "big", "x" * 3000)
    monkeypatch.setattr(dockerops.etcd, "_MAX_LINE", 2000)

    with pytest.raises(EtcdError) as err:
        client(etcd.url).get_prefix(prefix)

    assert err.value.kind == "bad_answer"
    assert str(err.value) == (
        f"etcd at {etcd.url} answered /v3/kv/range with an answer larger than 2000 bytes"
    )


def watched(urls: str | list[str], **etcd: Any) -> dict[str, Any]:
    return {
        "dockerops": {
            "etcd": {"endpoints": [urls] if isinstance(urls, str) else urls, **etcd},
            "services": {"web": etcd_service("/web/prod/"), "api": etcd_service("/api/prod/")},
        }
    }


def test_a_watch_answer_over_the_cap_is_a_new_baseline_not_a_stuck_beacon(
    own_etcd: Etcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dockerops.etcdwatch import look

    pillar = watched(own_etcd.url)
    memory = look(pillar, {}).memory
    own_etcd.put("/web/prod/a", "x" * 3000)  # the catch-up batch: one line over the cap
    now = own_etcd.put("/web/prod/b", "x" * 3000)
    monkeypatch.setattr(dockerops.etcd, "_MAX_LINE", 2000)

    found = look(pillar, memory)

    assert [(e["tag"], e["compacted"], e["revision"]) for e in found.events] == [
        ("api/changed", True, now),
        ("web/changed", True, now),
    ]
    (warning,) = found.warnings
    assert "sent a watch answer larger than 2000 bytes" in warning
    # The revision moved on: the next pass is an ordinary one.
    assert found.memory["revision"] == now
    assert look(pillar, found.memory).events == []
    last = own_etcd.put("/api/prod/k", "small")
    assert [(e["tag"], e["keys"], e["compacted"]) for e in look(pillar, found.memory).events] == [
        ("api/changed", ["/api/prod/k"], False)
    ]
    assert look(pillar, found.memory).memory["revision"] == last


def test_the_beacon_notices_another_cluster_at_the_same_endpoint(
    own_etcd: Etcd, tmp_path: Path
) -> None:
    from dockerops.etcdwatch import look

    pillar = watched(own_etcd.url)
    own_etcd.put("/web/prod/a", "1")
    memory = look(pillar, {}).memory
    assert memory["cluster_id"]
    own_etcd.stop()
    (tmp_path / "new").mkdir()
    replaced = Etcd(tmp_path / "new")  # a fresh cluster (its own peer port, so its own id)
    replaced.client_port, replaced.url = own_etcd.client_port, own_etcd.url
    replaced.start()
    try:
        for n in range(memory["revision"] + 3):  # past the remembered revision
            now = replaced.put("/elsewhere/k", str(n))

        found = look(pillar, memory)

        assert [(e["tag"], e["compacted"], e["revision"]) for e in found.events] == [
            ("api/changed", True, now),
            ("web/changed", True, now),
        ]
        assert "another etcd cluster answers at the endpoints" in found.warnings[0]
        assert look(pillar, found.memory).events == []
    finally:
        replaced.stop()


@pytest.fixture
def black_holes() -> Iterator[list[str]]:
    """Two endpoints on 127.0.0.1 that never complete a connection (a listen
    queue of one, filled: the kernel drops further SYNs, like a firewall)."""
    sockets, urls = [], []
    try:
        for _ in range(2):
            listener = socket.socket()
            sockets.append(listener)
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            sockets.append(socket.create_connection(listener.getsockname(), timeout=2))
            urls.append(f"http://127.0.0.1:{listener.getsockname()[1]}")
        yield urls
    finally:
        for sock in sockets:
            sock.close()


def test_a_beacon_pass_is_bounded_however_many_endpoints_are_black_holed(
    etcd: Etcd, tmp_path: Path, black_holes: list[str]
) -> None:
    from salt.loader import beacons

    # Without a bound: 5 s per endpoint; with it, at most max(4 / 2, 0.3 + 2) s.
    config = [{"interval": 4}]
    pillar = watched(black_holes, timeout="5s")
    beacon = beacons(beacon_opts(tmp_path / "a", pillar), {})["dockerops_etcd.beacon"]
    started = time.monotonic()
    found = beacon(config)
    assert time.monotonic() - started < 3.3
    assert [(e["tag"], e["kind"]) for e in found] == [
        ("api/unreachable", "timeout"),
        ("web/unreachable", "timeout"),
    ]

    # One black hole first: it gets 2 s to connect, the next endpoint the rest.
    pillar = watched([black_holes[0], etcd.url], timeout="5s")
    beacon = beacons(beacon_opts(tmp_path / "b", pillar), {})["dockerops_etcd.beacon"]
    started = time.monotonic()
    assert beacon(config) == []  # the baseline, from the endpoint that answers
    assert time.monotonic() - started < 3.3


# -- one config version, one revision ---------------------------------------


def etcd_files_spec(url: str, one: str, two: str) -> Any:
    from dockerops.spec import load_service

    files = {
        "a.json": {"etcd": {"prefix": one}},
        "b.env": {"etcd": {"prefix": two, "format": "env"}},
        "c.yaml": {"etcd": {"prefix": one, "format": "yaml"}},  # the same prefix again
    }
    data = {
        "dockerops": {
            "etcd": {"endpoints": [url], "timeout": "2s"},
            "services": {"web": {"image": "web", "config": {"path": "/etc/web", "files": files}}},
        }
    }
    return load_service(data, "web")


def test_a_render_reads_each_prefix_once_all_at_the_first_reads_revision(
    own_etcd: Etcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dockerops.render import render_service_config
    from dockerops.spec import EtcdSettings

    one, two = "/one/", "/two/"
    own_etcd.put(one + "k", "1")
    first = own_etcd.put(two + "LEVEL", "old")
    spec = etcd_files_spec(own_etcd.url, one, two)
    settings = EtcdSettings(endpoints=[own_etcd.url], timeout=2)
    read = EtcdClient.get_prefix
    calls: list[tuple[str, int | None]] = []
    between: list[Any] = []

    def store_changes_after_each_read(
        self: EtcdClient, prefix: str, revision: int | None = None
    ) -> Any:
        calls.append((prefix, revision))
        snapshot = read(self, prefix, revision)
        if between:
            between.pop(0)()
        return snapshot

    monkeypatch.setattr(EtcdClient, "get_prefix", store_changes_after_each_read)

    def render() -> dict[str, bytes]:
        rendered = render_service_config(spec, {}, etcd=settings)
        assert rendered is not None
        return {name: item.content for name, item in rendered.by_name().items()}

    between.append(lambda: own_etcd.put(two + "LEVEL", "new"))
    files = render()
    assert calls == [(one, None), (two, first)]
    assert files["b.env"] == b"LEVEL=old\n"  # as it was when the first prefix was read
    assert files["a.json"] == b'{\n  "k": "1"\n}\n' and files["c.yaml"] == b"k: '1'\n"

    # The revision compacted between two reads: every prefix read again, once.
    def change_and_compact() -> None:
        own_etcd.put(one + "k", "2")
        own_etcd.compact(own_etcd.put(two + "LEVEL", "newer"))

    calls.clear()
    between.append(change_and_compact)
    now = own_etcd.revision()
    files = render()
    assert calls == [(one, None), (two, now), (one, None), (two, now + 2)]
    assert (files["a.json"], files["b.env"]) == (b'{\n  "k": "2"\n}\n', b"LEVEL=newer\n")

    # ... and not more than once (a read that fails changes nothing after it).
    calls.clear()
    between.extend([change_and_compact, change_and_compact])
    with pytest.raises(EtcdError) as err:
        render()
    assert err.value.kind == "compacted"
    assert len(calls) == 4 and "again, after reading every prefix afresh" in str(err.value)
