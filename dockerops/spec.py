"""Service specs: pillar in, validated immutable models out.

Pillar layout::

    dockerops:
      environment: production
      defaults:            # merged under every service (dicts deep-merged)
        restart_policy: on-failure:5
      services:
        web:
          image: registry.example.com/web
          tag: "1.4"
          replicas: 2
          ports:
            - {container: 8080, host: 8081, host_ip: 127.0.0.1}

Every problem is reported with its pillar path (``dockerops:services:web:replicas``)
and the offending value, all at once, before anything is touched.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from ipaddress import ip_address
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from .errors import SpecError

PILLAR_KEY = "dockerops"

# The Docker reference grammar (distribution/reference), without tag/digest.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?)"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"^(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
SERVICE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,49}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESTART_RE = re.compile(r"^(no|always|unless-stopped|on-failure(:[1-9][0-9]*)?)$")

Port = Annotated[int, Field(ge=1, le=65535)]

# Fields whose values are never shown in an error (they may hold credentials).
_HIDDEN_VALUES = {"env"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class PortSpec(_Model):
    """A published port. Replica ``i`` (from 1) gets host port ``host + i - 1``."""

    container: Port
    host: Port | None = None
    # Loopback unless said otherwise: publishing on every interface is a choice
    # the operator should make explicitly (Docker's own default bypasses host
    # firewalls).
    host_ip: str = "127.0.0.1"
    protocol: Literal["tcp", "udp"] = "tcp"

    @field_validator("host_ip")
    @classmethod
    def _host_ip(cls, value: str) -> str:
        try:
            return str(ip_address(value))
        except ValueError:
            raise ValueError("not an IP address") from None


class ServiceSpec(_Model):
    """One service, as declared in pillar after defaults are merged."""

    name: str
    image: str
    tag: str = "latest"
    replicas: Annotated[int, Field(ge=0, le=100)] = 1
    command: list[str] | None = None
    env: dict[str, str] = {}
    ports: list[PortSpec] = []
    labels: dict[str, str] = {}
    restart_policy: str = "on-failure:5"
    environment: str = "default"

    @field_validator("replicas", mode="before")
    @classmethod
    def _replicas(cls, value: Any) -> Any:
        if isinstance(value, bool):  # YAML's yes/no is not a count
            raise ValueError("expected a number of replicas, not a boolean")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not SERVICE_NAME_RE.match(value):
            raise ValueError(
                "service names are lowercase letters, digits, '-' and '_' "
                "(at most 50, starting with a letter or digit)"
            )
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if "@" in value or (":" in value.rsplit("/", 1)[-1]):
            raise ValueError("image is the repository only; put the version in 'tag'")
        if not REPOSITORY_RE.match(value):
            raise ValueError("not a valid image repository reference")
        return value

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        if not TAG_RE.match(value):
            raise ValueError("not a valid image tag")
        return value

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, value: Any) -> Any:
        if isinstance(value, str):
            return ["/bin/sh", "-c", value]
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or not ENV_NAME_RE.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if isinstance(item, bool):
                item = "true" if item else "false"
            if isinstance(item, (dict, list)) or item is None:
                raise ValueError(f"{key}: values must be strings or numbers")
            out[key] = str(item)
        return out

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: list[PortSpec], info: ValidationInfo) -> list[PortSpec]:
        seen = set()
        for port in value:
            key = (port.container, port.protocol)
            if key in seen:
                raise ValueError(f"container port {port.container}/{port.protocol} listed twice")
            seen.add(key)
        # Replica i publishes host + i - 1: every replica's port must be valid and
        # no two published ports may collide on this host.
        replicas = info.data.get("replicas") or 1
        taken: dict[tuple[str, int, str], int] = {}
        for port in value:
            if port.host is None:
                continue
            last = port.host + replicas - 1
            if last > 65535:
                raise ValueError(f"host port {port.host} with {replicas} replicas runs past 65535")
            for host_port in range(port.host, last + 1):
                where = (port.host_ip, host_port, port.protocol)
                if where in taken:
                    raise ValueError(
                        f"host port {port.host_ip}:{host_port}/{port.protocol} is published "
                        f"twice (container ports {taken[where]} and {port.container})"
                    )
                taken[where] = port.container
        return value

    @field_validator("restart_policy")
    @classmethod
    def _restart(cls, value: str) -> str:
        if not RESTART_RE.match(value):
            raise ValueError("expected no, always, unless-stopped, on-failure or on-failure:N")
        return value

    @property
    def image_ref(self) -> str:
        return f"{self.image}:{self.tag}"


class PillarRoot(_Model):
    """The top of ``dockerops`` pillar; services are validated one by one."""

    environment: str = "default"
    defaults: dict[str, Any] = {}
    services: dict[str, dict[str, Any]] = {}
    allowed_host_paths: list[str] = ["/srv/dockerops", "/var/log/dockerops"]


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: dicts merge recursively, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_root(pillar: Mapping[str, Any]) -> PillarRoot:
    """Validate the top level of ``dockerops`` pillar."""
    if "_errors" in pillar:
        # A pillar that failed to render must never read as "no services".
        raise SpecError([f"pillar failed to render: {pillar['_errors']}"])
    raw = pillar.get(PILLAR_KEY) or {}
    if not isinstance(raw, Mapping):
        raise SpecError([f"{PILLAR_KEY}: expected a mapping, got {_show(raw)}"])
    try:
        return PillarRoot.model_validate(dict(raw))
    except ValidationError as err:
        raise SpecError(_problems(err, (PILLAR_KEY,), PillarRoot)) from None


def service_names(pillar: Mapping[str, Any]) -> list[str]:
    """The services declared in pillar, sorted."""
    return sorted(load_root(pillar).services)


def load_service(
    pillar: Mapping[str, Any], name: str, overrides: Mapping[str, Any] | None = None
) -> ServiceSpec:
    """Validate one service: pillar defaults, then the service, then ``overrides``."""
    root = load_root(pillar)
    if name not in root.services and not overrides:
        hint = _did_you_mean(name, list(root.services))
        raise SpecError([f"{PILLAR_KEY}:services:{name}: no such service in pillar{hint}"])
    declared = root.services.get(name) or {}
    if not isinstance(declared, Mapping):
        raise SpecError([f"{PILLAR_KEY}:services:{name}: expected a mapping"])
    merged = deep_merge(root.defaults, declared)
    merged = deep_merge(merged, dict(overrides or {}))
    merged.setdefault("environment", root.environment)
    merged["name"] = name
    try:
        return ServiceSpec.model_validate(merged)
    except ValidationError as err:
        sources = {
            "argument": dict(overrides or {}),
            "service": declared,
            "defaults": root.defaults,
        }
        raise SpecError(
            _problems(err, (PILLAR_KEY, "services", name), ServiceSpec, sources)
        ) from None


def load_services(pillar: Mapping[str, Any]) -> list[ServiceSpec]:
    """Validate every service, reporting the problems of all of them at once."""
    specs, problems = [], []
    for name in service_names(pillar):
        try:
            specs.append(load_service(pillar, name))
        except SpecError as err:
            problems.extend(err.problems)
    if problems:
        raise SpecError(problems)
    return specs


def _problems(
    err: ValidationError,
    prefix: tuple[str, ...],
    model: type[BaseModel],
    sources: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    out = []
    for item in err.errors():
        loc = [str(part) for part in item["loc"]]
        where = _where(loc, prefix, sources) if sources else prefix
        path = ":".join((*where, *loc))
        if item["type"] == "extra_forbidden":
            fields = _fields_at(model, loc[:-1])
            out.append(f"{path}: unknown key{_did_you_mean(loc[-1], fields)}")
            continue
        message = str(item["msg"]).removeprefix("Value error, ")
        if loc and loc[0] in _HIDDEN_VALUES:
            out.append(f"{path}: {message}")
        else:
            out.append(f"{path}: {message} (got {_show(item.get('input'))})")
    return out


def _where(
    loc: list[str], prefix: tuple[str, ...], sources: Mapping[str, Mapping[str, Any]]
) -> tuple[str, ...]:
    """Which layer (argument, service, defaults) supplied the value at ``loc``."""
    if not loc:
        return prefix
    for layer in ("argument", "service", "defaults"):
        if _has_path(sources.get(layer) or {}, loc):
            return {
                "argument": ("argument",),
                "service": prefix,
                "defaults": (PILLAR_KEY, "defaults"),
            }[layer]
    return prefix


def _has_path(data: Any, loc: list[str]) -> bool:
    for part in loc:
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return False
    return True


def _fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    current: Any = model
    for part in loc:
        if part.isdigit():
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        current = next(
            (a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), annotation
        )
    return list(getattr(current, "model_fields", {}))


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
