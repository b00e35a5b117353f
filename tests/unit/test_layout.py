"""dockerops.layout: host paths and host ports checked across every service of a host."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from dockerops import spec as spec_module
from dockerops.converge import remove_service
from dockerops.errors import SpecError
from dockerops.host import DockerHost
from dockerops.layout import footprint, problems
from dockerops.spec import ServiceSpec, check_service_name, load_service, load_services

ALLOWED = ["/srv/dockerops", "/var/log/dockerops"]


def service(name: str, **fields: Any) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {"name": name, "image": "web", **fields}, context={"allowed_host_paths": ALLOWED}
    )


def config(root: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"path": "/etc/app", "files": {"a": {"contents": "x"}}}
    if root is not None:
        out["root"] = root
    return out


def data(host: str, read_only: bool = False, container: str = "/data") -> dict[str, Any]:
    return {"host": host, "container": container, "read_only": read_only}


def found(*specs: ServiceSpec, only: str | None = None) -> list[str]:
    return problems([footprint(s) for s in specs], ALLOWED, only)


# --- paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        # Config roots: never an allow-list root, never shared, never nested.
        (
            [service("web", config=config("/srv/dockerops"))],
            [
                "dockerops:services:web:config:root: /srv/dockerops is the allow-list root "
                "/srv/dockerops"
            ],
        ),
        (
            [
                service("web", config=config("/srv/dockerops/web")),
                service("api", config=config("/srv/dockerops/web")),
            ],
            [
                "dockerops:services:web:config:root: /srv/dockerops/web is also the config "
                "root of service api (dockerops:services:api:config:root)",
                "dockerops:services:api:config:root: /srv/dockerops/web is also the config "
                "root of service web (dockerops:services:web:config:root)",
            ],
        ),
        (
            [
                service("web", config=config("/srv/dockerops/web")),
                service("api", config=config("/srv/dockerops/web/api")),
            ],
            [
                "dockerops:services:web:config:root: /srv/dockerops/web contains "
                "/srv/dockerops/web/api, the config root of service api",
                "dockerops:services:api:config:root: /srv/dockerops/web/api lies inside "
                "/srv/dockerops/web, the config root of service web",
            ],
        ),
        # A config root inside a data mount (its own or another's), or holding one.
        (
            [
                service(
                    "web",
                    config=config("/srv/dockerops/web/data/config"),
                    data=[data("/srv/dockerops/web/data")],
                )
            ],
            [
                "dockerops:services:web:config:root: /srv/dockerops/web/data/config lies inside "
                "/srv/dockerops/web/data, the writable data mount of service web "
                "(dockerops:services:web:data:0:host)",
                "dockerops:services:web:data:0:host: /srv/dockerops/web/data contains "
                "/srv/dockerops/web/data/config, the config root of service web",
            ],
        ),
        (
            [
                service("web", config=config("/srv/dockerops/db/conf")),
                service("db", data=[data("/srv/dockerops/db", read_only=True)]),
            ],
            [
                "dockerops:services:web:config:root: /srv/dockerops/db/conf lies inside "
                "/srv/dockerops/db, the data mount of service db",
                "dockerops:services:db:data:0:host: /srv/dockerops/db contains "
                "/srv/dockerops/db/conf, the config root of service web",
            ],
        ),
        (
            [
                service("web", config=config("/srv/dockerops/web")),
                service("db", data=[data("/srv/dockerops/web")]),
            ],
            [
                "dockerops:services:web:config:root: /srv/dockerops/web is also the "
                "writable data mount of service db",
                "dockerops:services:db:data:0:host: /srv/dockerops/web is also the config "
                "root of service web",
            ],
        ),
        # Data mounts: nesting under a writable one is refused, sharing one is not.
        (
            [
                service("a", data=[data("/srv/dockerops/a")]),
                service("b", data=[data("/srv/dockerops/a/b")]),
            ],
            [
                "dockerops:services:a:data:0:host: /srv/dockerops/a contains /srv/dockerops/a/b, "
                "the writable data mount of service b",
                "dockerops:services:b:data:0:host: /srv/dockerops/a/b lies inside "
                "/srv/dockerops/a, the writable data mount of service a",
            ],
        ),
        (
            [
                service(
                    "a",
                    data=[
                        data("/srv/dockerops/a"),
                        data("/srv/dockerops/a/logs", container="/logs"),
                    ],
                )
            ],
            [
                "dockerops:services:a:data:0:host: /srv/dockerops/a contains",
                "dockerops:services:a:data:1:host: /srv/dockerops/a/logs lies inside",
            ],
        ),
        (
            [
                service("a", data=[data("/srv/dockerops/a", read_only=True)]),
                service("b", data=[data("/srv/dockerops/a/b")]),
            ],
            [],
        ),
        (
            [
                service("a", data=[data("/srv/dockerops/shared")]),
                service("b", data=[data("/srv/dockerops/shared")]),
            ],
            [],
        ),
        (
            [
                service("web", config=config(), data=[data("/srv/dockerops/web/data")]),
                service("api", config=config(), data=[data("/srv/dockerops/api/data")]),
            ],
            [],
        ),
        (
            [
                service("a", data=[data("/srv/dockerops/ab")]),
                service("b", data=[data("/srv/dockerops/a-b")]),
            ],
            [],
        ),
    ],
    ids=[
        "config-root-is-allow-list-root",
        "shared-config-root",
        "nested-config-roots",
        "config-root-in-own-data",
        "config-root-in-read-only-data",
        "config-root-is-data",
        "writable-data-holds-other-data",
        "writable-data-holds-own-data",
        "read-only-data-holds-data",
        "shared-data",
        "defaults-side-by-side",
        "prefix-is-not-nesting",
    ],
)
def test_path_problems(specs: list[ServiceSpec], expected: list[str]) -> None:
    out = found(*specs)

    assert len(out) == len(expected), out
    for start in expected:
        assert [p for p in out if p.startswith(start)], (start, out)


def test_only_reports_the_named_service_but_compares_it_with_all() -> None:
    web = service("web", config=config("/srv/dockerops/x"))
    api = service("api", config=config("/srv/dockerops/x"))
    other = service("other", config=config("/srv/dockerops/x"))

    out = found(web, api, other, only="web")

    assert len(out) == 2
    assert all(p.startswith("dockerops:services:web:config:root") for p in out)
    assert any("service api" in p for p in out) and any("service other" in p for p in out)


# --- ports ------------------------------------------------------------------------------------


def ports(
    host: int, host_ip: str = "127.0.0.1", protocol: str = "tcp", container: int = 80
) -> dict[str, Any]:
    return {"container": container, "host": host, "host_ip": host_ip, "protocol": protocol}


@pytest.mark.parametrize(
    ("a", "b", "clash"),
    [
        # replicas 1 + 1 start-first spare: 19200-19201.
        ({"ports": [ports(19200)]}, {"ports": [ports(19201)]}, "127.0.0.1:19201/tcp"),
        ({"ports": [ports(19200)]}, {"ports": [ports(19202)]}, None),
        (
            {"ports": [ports(19200)], "update": {"order": "stop-first"}},
            {"ports": [ports(19201)]},
            None,
        ),
        (
            {"ports": [ports(19200)], "replicas": 3},
            {"ports": [ports(19205)]},
            "127.0.0.1:19205/tcp",
        ),
        ({"ports": [ports(19200)]}, {"ports": [ports(19200, protocol="udp")]}, None),
        ({"ports": [ports(19200)]}, {"ports": [ports(19200, host_ip="127.0.0.2")]}, None),
        (
            {"ports": [ports(19200, host_ip="0.0.0.0")]},
            {"ports": [ports(19201, host_ip="127.0.0.2")]},
            "0.0.0.0:19201/tcp",
        ),
        (
            {"ports": [ports(19200, host_ip="::")]},
            {"ports": [ports(19200, host_ip="127.0.0.1")]},
            ":::19200/tcp",
        ),
        (
            {"ports": [ports(19200, host_ip="::ffff:127.0.0.1")]},
            {"ports": [ports(19200)]},
            "::ffff:7f00:1:19200/tcp",
        ),
        ({"ports": [{"container": 80}]}, {"ports": [{"container": 80}]}, None),
    ],
    ids=[
        "spare-slot-overlaps",
        "adjacent",
        "stop-first-has-no-spare",
        "three-replicas-three-spares",
        "other-protocol",
        "other-address",
        "ipv4-wildcard",
        "ipv6-wildcard",
        "ipv4-mapped",
        "random-ports",
    ],
)
def test_port_problems(a: dict[str, Any], b: dict[str, Any], clash: str | None) -> None:
    out = found(service("aa", **a), service("bb", **b))

    if clash is None:
        assert out == []
    else:
        assert len(out) == 2, out
        assert out[0].startswith(f"dockerops:services:aa:ports:0:host: host port {clash}")
        assert "taken by service bb (dockerops:services:bb:ports:0:host" in out[0]
        assert out[1].startswith("dockerops:services:bb:ports:0:host: host port ")
        assert "taken by service aa" in out[1]


def test_two_ports_of_one_service_on_a_wildcard_and_an_address() -> None:
    web = service(
        "web",
        ports=[ports(19200, host_ip="0.0.0.0"), ports(19200, host_ip="127.0.0.1", container=81)],
    )

    out = found(web)

    assert len(out) == 2
    assert "taken by another port of service web" in out[0]


# --- through the pillar loader ----------------------------------------------------------------


def pillar(services: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"dockerops": {"services": services, **top}}


def test_load_service_refuses_a_clash_with_another_service() -> None:
    p = pillar(
        {
            "web": {"image": "web", "config": config("/srv/dockerops/shared")},
            "api": {"image": "api", "config": config("/srv/dockerops/shared")},
            "ok": {"image": "ok"},
        }
    )

    with pytest.raises(SpecError) as err:
        load_service(p, "web")
    assert err.value.problems == [
        "dockerops:services:web:config:root: /srv/dockerops/shared is also the config root "
        "of service api (dockerops:services:api:config:root); dockerops writes and removes "
        "config roots as root and owns them alone"
    ]
    assert load_service(p, "ok").name == "ok"
    with pytest.raises(SpecError) as every:
        load_services(p)
    assert len(every.value.problems) == 2


def test_defaults_apply_to_the_other_services_too() -> None:
    # The default config root is per service; a data mount from defaults is shared.
    p = pillar(
        {"web": {"image": "web", "config": config()}, "api": {"image": "api"}},
        defaults={"data": [data("/srv/dockerops")]},
    )

    with pytest.raises(SpecError, match="config:root: /srv/dockerops/web/config lies inside"):
        load_service(p, "web")


def test_overrides_are_checked_against_the_other_services() -> None:
    p = pillar(
        {
            "web": {"image": "web", "ports": [ports(19200)], "update": {"order": "stop-first"}},
            "api": {"image": "api", "ports": [ports(19202)]},
        }
    )
    assert load_service(p, "web").slots == 1

    with pytest.raises(SpecError, match=r"host port 127\.0\.0\.1:19202/tcp"):
        load_service(p, "web", {"replicas": 3})


def test_an_invalid_other_service_does_not_block_this_one() -> None:
    p = pillar({"web": {"image": "web"}, "broken": {"image": "web", "replicas": -1}})

    assert load_service(p, "web").name == "web"
    with pytest.raises(SpecError, match="broken:replicas"):
        load_service(p, "broken")


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param({"replicas": -1}, id="invalid-field"),
        pytest.param(
            {"tag": "1.0\n", "data": [{"host": "/srv/dockerops/shared"}]}, id="mount-invalid"
        ),
    ],
)
def test_an_invalid_other_service_still_counts_where_it_writes(broken: dict[str, Any]) -> None:
    """Its containers may still run and write: its data mount still covers
    another service's config root."""
    other = {"image": "api", "data": [data("/srv/dockerops/shared")], **broken}
    p = pillar(
        {"web": {"image": "web", "config": config("/srv/dockerops/shared/web")}, "api": other}
    )

    with pytest.raises(SpecError, match="config:root: /srv/dockerops/shared/web lies inside"):
        load_service(p, "web")


def test_a_changed_pillar_is_not_served_from_the_cache() -> None:
    p = pillar(
        {"web": {"image": "web", "config": config("/srv/dockerops/a")}, "api": {"image": "api"}}
    )
    load_service(p, "web")

    p["dockerops"]["services"]["api"]["config"] = config("/srv/dockerops/a")

    with pytest.raises(SpecError, match="also the config root of service api"):
        load_service(p, "web")


def test_the_host_layout_is_computed_once_per_pillar(monkeypatch: pytest.MonkeyPatch) -> None:
    services = {
        f"svc{i:02d}": {
            "image": "web",
            "replicas": 2,
            "ports": [ports(20000 + 10 * i)],
            "config": config(),
            "data": [data(f"/srv/dockerops/svc{i:02d}/data")],
        }
        for i in range(50)
    }
    p = pillar(services)
    calls = []
    validate = spec_module._validate_service

    def counting(*args: Any) -> ServiceSpec:
        calls.append(args[1])
        return validate(*args)

    monkeypatch.setattr(spec_module, "_validate_service", counting)
    spec_module._LAYOUTS.clear()
    started = time.perf_counter()
    # A highstate: config_managed and running per service.
    for name in services:
        load_service(p, name)
        load_service(p, name)
    took = time.perf_counter() - started

    # 100 loads + 50 for the layout, not 100 x 50.
    assert len(calls) == 150
    # Recorded: about 0.1-0.2 s for these 100 loads on the test machine.
    assert took < 5


@pytest.mark.parametrize("name", ["", " ", "Web", "web\n", "../etc", "a" * 51, None, 5])
def test_check_service_name_refuses_empty_and_invalid_names(name: Any) -> None:
    with pytest.raises(SpecError, match="is not a service name"):
        check_service_name(name)


def test_load_service_refuses_an_empty_name_even_with_overrides() -> None:
    with pytest.raises(SpecError, match="name: '' is not a service name"):
        load_service(pillar({"web": {"image": "web"}}), "", {"image": "web"})


@pytest.mark.parametrize("name", ["", "../x"])
def test_the_library_never_reads_an_empty_name_as_every_service(name: str) -> None:
    class NoDaemon:
        """Any Docker call fails the test: the name must be refused first."""

        def __getattr__(self, attr: str) -> Any:
            raise AssertionError(f"Docker called: {attr}")

    host = DockerHost(SimpleNamespace(api=NoDaemon()))  # type: ignore[arg-type]

    for call in (lambda: host.managed(name), lambda: remove_service(host, name, test=True)):
        with pytest.raises(SpecError, match="is not a service name"):
            call()
