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

          secrets: {DB_PASSWORD: ...}      # env never shown anywhere
          config:
            path: /etc/web                 # read-only in the container
            on_change: rolling             # restart | signal:SIGHUP | none
            files:
              web.conf: {source: salt://web/web.conf.jinja, template: jinja}
              motd: {contents: "hello"}
          data:
            - {host: /srv/dockerops/web/data, container: /data}
          logging: {driver: json-file, options: {max-size: 10m}}
          healthcheck: {test: "wget -q -O- http://127.0.0.1:8080/health", interval: 2s}
          update: {health_timeout: 60s, min_healthy_time: 5s}

Every problem is reported with its pillar path (``dockerops:services:web:replicas``)
and the offending value, all at once, before anything is touched. Values of
``env`` and ``secrets`` are never echoed.
"""

from __future__ import annotations

import difflib
import posixpath
import re
import signal
from collections.abc import Mapping
from ipaddress import ip_address
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
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
_HIDDEN_VALUES = {"env", "secrets"}
DEFAULT_ALLOWED_HOST_PATHS = ("/srv/dockerops", "/var/log/dockerops")
DEFAULT_CONFIG_ROOT = "/srv/dockerops/{service}/config"
# Bounded by default: json-file grows without limit otherwise (moby#40207).
DEFAULT_LOG_OPTIONS = {"json-file": {"max-size": "10m", "max-file": "3"}, "local": {}}
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """``1.5``, ``"500ms"``, ``"2s"``, ``"1m"`` -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 2s, 500ms or 1m")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    match = _DURATION_RE.match(str(value).strip())
    if not match:
        raise ValueError("expected a duration such as 2s, 500ms or 1m")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _normpath(path: str) -> str:
    """posixpath.normpath, but '//x' (which POSIX keeps) is '/x' here."""
    return "/" + posixpath.normpath(path).lstrip("/")


def _under(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def _host_path(value: str, info: ValidationInfo) -> str:
    """An absolute, normalised host path inside ``allowed_host_paths``."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError("host paths must be absolute")
    if "\0" in value:
        raise ValueError("host paths cannot contain NUL")
    normal = _normpath(value)
    allowed = list((info.context or {}).get("allowed_host_paths") or DEFAULT_ALLOWED_HOST_PATHS)
    if not _under(normal, [_normpath(root) for root in allowed]):
        raise ValueError(f"{normal} is outside dockerops:allowed_host_paths ({', '.join(allowed)})")
    return normal


def _container_path(value: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError("container paths must be absolute")
    normal = _normpath(value)
    if normal == "/":
        raise ValueError("cannot mount over the container's root")
    return normal


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


class ConfigFile(_Model):
    """One file of a config directory: inline ``contents`` or a ``source``."""

    contents: str | None = None
    source: str | None = None
    template: Literal["jinja"] | None = None
    mode: str = "0644"
    owner: str | int | None = None
    group: str | int | None = None
    # Like file.managed's show_changes: False keeps a file's diff out of output.
    show_diff: bool = True

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> str:
        text = str(value)
        if not re.match(r"^0?[0-7]{3}$", text):
            raise ValueError("expected an octal mode such as '0644'")
        return "0" + text[-3:]

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("salt://"):
            raise ValueError("sources are salt:// URLs")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> ConfigFile:
        if (self.contents is None) == (self.source is None):
            raise ValueError("give exactly one of contents or source")
        return self


def _signal_policy(value: str) -> str:
    if value in ("rolling", "restart", "none"):
        return value
    if value.startswith("signal:"):
        name = value.split(":", 1)[1].upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if name not in signal.Signals.__members__:
            raise ValueError(f"unknown signal {value.split(':', 1)[1]!r}")
        return f"signal:{name}"
    raise ValueError("expected rolling, restart, signal:<SIGNAL> or none")


class ConfigSpec(_Model):
    """A directory of files Salt renders on the host, mounted read-only."""

    path: str
    files: dict[str, ConfigFile]
    on_change: Annotated[str, AfterValidator(_signal_policy)] = "rolling"
    root: str | None = None
    keep: Annotated[int, Field(ge=1, le=50)] = 3

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _container_path(value)

    @field_validator("root")
    @classmethod
    def _root(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _host_path(value, info)

    @field_validator("files")
    @classmethod
    def _files(cls, value: dict[str, ConfigFile]) -> dict[str, ConfigFile]:
        if not value:
            raise ValueError("a config directory needs at least one file")
        out = {}
        for name, item in value.items():
            normal = posixpath.normpath(name) if isinstance(name, str) else ""
            parts = normal.split("/")
            if (
                not isinstance(name, str)
                or not name
                or name.startswith("/")
                or ".." in name.split("/")
                or normal in (".", "")
                or any(part.startswith("..") for part in parts)
                or "\0" in name
            ):
                raise ValueError(f"{name!r}: config file names are relative paths without '..'")
            if normal in out:
                raise ValueError(f"{name!r} names the same file as another entry")
            out[normal] = item
        for name in out:
            parts = name.split("/")
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if parent in out:
                    raise ValueError(f"{parent!r} is both a file and a directory")
        return out

    @property
    def signal(self) -> str | None:
        return self.on_change.split(":", 1)[1] if self.on_change.startswith("signal:") else None

    @property
    def live(self) -> bool:
        """Mounted as the live view (``signal``/``none``) rather than pinned per version."""
        return self.on_change == "none" or self.signal is not None


class DataMount(_Model):
    """A host directory bind-mounted for persistent data."""

    host: str
    container: str
    read_only: bool = False

    @field_validator("host")
    @classmethod
    def _host(cls, value: str, info: ValidationInfo) -> str:
        return _host_path(value, info)

    @field_validator("container")
    @classmethod
    def _container(cls, value: str) -> str:
        return _container_path(value)


class LoggingSpec(_Model):
    driver: str = "json-file"
    options: dict[str, str] = {}

    @field_validator("options", mode="before")
    @classmethod
    def _options(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): str(v) for k, v in value.items()}
        return value

    @property
    def effective_options(self) -> dict[str, str]:
        return {**DEFAULT_LOG_OPTIONS.get(self.driver, {}), **self.options}


class HealthcheckSpec(_Model):
    """A Docker healthcheck; ``test`` as a string runs with the container's shell."""

    test: list[str] | str
    interval: Duration = 5.0
    timeout: Duration = 3.0
    retries: Annotated[int, Field(ge=1, le=100)] = 3
    start_period: Duration = 0.0

    @field_validator("interval", "timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value < 0.001:
            raise ValueError("must be at least 1ms")
        return value

    @property
    def docker_test(self) -> list[str]:
        if isinstance(self.test, str):
            return ["CMD-SHELL", self.test]
        return self.test if self.test[:1] in (["CMD"], ["CMD-SHELL"]) else ["CMD", *self.test]


# Start-first batches in flight at once: the oldest proving itself for
# min_healthy_time while the next ones start.
PIPELINE = 3


class UpdateSpec(_Model):
    """How replicas are replaced (image updates and config changes).

    ``order: start-first`` starts a replacement before stopping the replica it
    replaces, so capacity never drops; the replacement runs in a spare *slot*
    (a spare host port, see :class:`ServiceSpec`). ``min_healthy_time`` left
    unset is the time the healthcheck needs to notice a failure (interval x
    retries); set shorter, it is refused at rollout time, because a broken
    version would then be reported healthy (Swarm's ``monitor`` trap).
    """

    parallelism: Annotated[int, Field(ge=1, le=100)] = 1
    order: Literal["start-first", "stop-first"] = "start-first"
    health_timeout: Duration = 60.0
    min_healthy_time: Duration | None = None
    rollback: bool = True

    def spares(self, replicas: int) -> int:
        """Spare slots a start-first rollout of ``replicas`` needs beside them.

        Up to ``PIPELINE`` batches run beside their old replicas at once (the
        oldest proving itself, the next ones starting), never more batches
        than the rollout has: ``min(parallelism, replicas)`` slots per batch
        in flight. Stop-first replaces in place and needs none.
        """
        if self.order != "start-first":
            return 0
        size = max(1, min(self.parallelism, replicas))
        batches = -(-max(replicas, 1) // size)
        return size * min(PIPELINE, batches)


class ServiceSpec(_Model):
    """One service, as declared in pillar after defaults are merged."""

    name: str
    image: str
    tag: str = "latest"
    replicas: Annotated[int, Field(ge=0, le=100)] = 1
    # Before ports: the ports check needs the spare slots of start-first updates.
    update: UpdateSpec = UpdateSpec()
    command: list[str] | None = None
    env: dict[str, str] = {}
    secrets: dict[str, str] = {}
    ports: list[PortSpec] = []
    config: ConfigSpec | None = None
    data: list[DataMount] = []
    labels: dict[str, str] = {}
    restart_policy: str = "on-failure:5"
    logging: LoggingSpec = LoggingSpec()
    healthcheck: HealthcheckSpec | None = None
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

    @field_validator("env", "secrets", mode="before")
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
        # Slot i (replicas 1..N, then start-first spares) publishes host + i - 1.
        update = info.data.get("update")
        replicas = info.data.get("replicas") or 1
        if isinstance(update, UpdateSpec):
            replicas += update.spares(replicas)
        taken: dict[tuple[str, int, str], int] = {}
        for port in value:
            if port.host is None:
                continue
            last = port.host + replicas - 1
            if last > 65535:
                raise ValueError(
                    f"host port {port.host} with {replicas} slots (replicas and start-first "
                    "spares) runs past 65535"
                )
            for host_port in range(port.host, last + 1):
                where = (port.host_ip, host_port, port.protocol)
                if where in taken:
                    raise ValueError(
                        f"host port {port.host_ip}:{host_port}/{port.protocol} is published "
                        f"twice (container ports {taken[where]} and {port.container})"
                    )
                taken[where] = port.container
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSpec:
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise ValueError(f"{', '.join(both)} set in both env and secrets")
        targets = [m.container for m in self.data] + ([self.config.path] if self.config else [])
        dupes = sorted({t for t in targets if targets.count(t) > 1})
        if dupes:
            raise ValueError(f"{', '.join(dupes)} mounted twice in the container")
        return self

    @property
    def config_root(self) -> str | None:
        if self.config is None:
            return None
        return self.config.root or DEFAULT_CONFIG_ROOT.format(service=self.name)

    @property
    def all_env(self) -> dict[str, str]:
        return {**self.env, **self.secrets}

    @property
    def secret_values(self) -> list[str]:
        return [value for value in self.secrets.values() if value]

    @field_validator("restart_policy")
    @classmethod
    def _restart(cls, value: str) -> str:
        if not RESTART_RE.match(value):
            raise ValueError("expected no, always, unless-stopped, on-failure or on-failure:N")
        return value

    @property
    def image_ref(self) -> str:
        return f"{self.image}:{self.tag}"

    @property
    def slots(self) -> int:
        """Slots the service's containers may occupy: its replicas, then spares."""
        return self.replicas + self.update.spares(self.replicas)


class PillarRoot(_Model):
    """The top of ``dockerops`` pillar; services are validated one by one."""

    environment: str = "default"
    defaults: dict[str, Any] = {}
    services: dict[str, dict[str, Any]] = {}
    allowed_host_paths: list[str] = list(DEFAULT_ALLOWED_HOST_PATHS)

    @field_validator("allowed_host_paths")
    @classmethod
    def _allowed(cls, value: list[str]) -> list[str]:
        out = []
        for path in value:
            normal = _normpath(path) if isinstance(path, str) else ""
            if not path.startswith("/") or normal == "/":
                raise ValueError(f"{path!r}: allowed host paths are absolute and not /")
            out.append(normal)
        return out


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
        spec = ServiceSpec.model_validate(
            merged, context={"allowed_host_paths": root.allowed_host_paths}
        )
    except ValidationError as err:
        sources = {
            "argument": dict(overrides or {}),
            "service": declared,
            "defaults": root.defaults,
        }
        raise SpecError(
            _problems(err, (PILLAR_KEY, "services", name), ServiceSpec, sources)
        ) from None
    config_root = spec.config_root
    if config_root and not _under(config_root, root.allowed_host_paths):
        raise SpecError(
            [
                f"{PILLAR_KEY}:services:{name}:config:root: {config_root} is outside "
                f"{PILLAR_KEY}:allowed_host_paths ({', '.join(root.allowed_host_paths)})"
            ]
        )
    return spec


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
        value = item.get("input")
        hidden = (loc and loc[0] in _HIDDEN_VALUES) or loc[:2] == ["config", "files"]
        # Only scalars are echoed: a mapping or list may hold env, secrets or
        # config contents, and is too long to help anyway.
        if hidden or item["type"] == "missing" or isinstance(value, (Mapping, list, tuple)):
            out.append(f"{path}: {message}")
        else:
            out.append(f"{path}: {message} (got {_show(value)})")
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
