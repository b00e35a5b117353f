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
          expect_ports: [8080, "9090/udp"] # listened on inside (dockerops.check_ports)

Every problem is reported with its pillar path (``dockerops:services:web:replicas``)
and the offending value, all at once, before anything is touched. Values of
``env`` and ``secrets`` are never echoed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import posixpath
import re
import shlex
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from . import layout, logdrivers
from .errors import SpecError

PILLAR_KEY = "dockerops"
ETCD_ENV_ENDPOINTS = "DOCKEROPS_ETCD_ENDPOINTS"
ETCD_ENV_ENVIRONMENT = "DOCKEROPS_ENVIRONMENT"

# The Docker reference grammar (distribution/reference), without tag/digest.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?)"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# Every pattern is used with fullmatch: ``$`` would let a trailing newline through.
REPOSITORY_RE = re.compile(rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
# Docker's limit on a whole repository name.
REPOSITORY_MAX = 255
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
ENV_SHORT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")
SERVICE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,49}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
RESTART_RE = re.compile(r"no|always|unless-stopped|on-failure(:[1-9][0-9]{0,8})?")
MODE_RE = re.compile(r"0?[0-7]{3}")
# A user or group given by name (POSIX portable names, and Samba's trailing $).
ACCOUNT_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")
# uid/gid 4294967295 is (uid_t)-1, "leave unchanged" to chown.
ACCOUNT_ID_MAX = 2**32 - 2
LOG_DRIVER_RE = re.compile(
    r"[a-z0-9][a-z0-9_.-]{0,63}(?:/[a-z0-9][a-z0-9_.-]{0,63})?(?::[A-Za-z0-9_.-]{1,128})?"
)
# Control characters a value may carry to a container: newline and tab only.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Anything below space, and DEL: never in a path or a file name.
_PATH_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Linux NAME_MAX; a path (host or container, or a config file name) is kept
# well below PATH_MAX (4096), so a config root plus a version plus a file
# name always fits.
NAME_MAX = 255
PATH_MAX = 1024

Port = Annotated[int, Field(ge=1, le=65535)]

# Fields whose values are never shown in an error (they may hold credentials).
_HIDDEN_VALUES = {"env", "secrets"}
DEFAULT_ALLOWED_HOST_PATHS = ("/srv/dockerops", "/var/log/dockerops")
DEFAULT_CONFIG_ROOT = "/srv/dockerops/{service}/config"
# File logs (``logs: {path:}``) live in <root>/<service>/<slot>/ on the host.
DEFAULT_LOG_ROOT = "/var/log/dockerops"
# Bounded by default: json-file grows without limit otherwise (moby#40207).
DEFAULT_LOG_OPTIONS = {"json-file": {"max-size": "10m", "max-file": "3"}, "local": {}}
_DURATION_RE = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,9})?)(ms|s|m|h)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
HOUR = 3600.0


def parse_duration(value: Any) -> float:
    """``1.5``, ``"500ms"``, ``"2s"``, ``"1m"`` -> seconds (finite, not negative)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 2s, 500ms or 1m")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError("a duration must be a finite number of seconds") from None
    else:
        match = _DURATION_RE.fullmatch(value.strip()) if isinstance(value, str) else None
        if not match:
            raise ValueError("expected a duration such as 2s, 500ms or 1m")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def _at_most(maximum: float) -> AfterValidator:
    def check(seconds: float) -> float:
        if seconds > maximum:
            raise ValueError(f"at most {maximum:g}s ({maximum / HOUR:g}h)")
        return seconds

    return AfterValidator(check)


Duration = Annotated[float, BeforeValidator(parse_duration)]
# Upper bounds, so that no input can make a rollout (which holds the
# service's lock) wait for ever: healthcheck timings up to an hour each,
# update.health_timeout and update.min_healthy_time up to an hour.
HEALTHCHECK_DURATION_MAX = HOUR
UPDATE_DURATION_MAX = HOUR
HealthcheckDuration = Annotated[Duration, _at_most(HEALTHCHECK_DURATION_MAX)]
UpdateDuration = Annotated[Duration, _at_most(UPDATE_DURATION_MAX)]


def _no_nul(value: Any) -> Any:
    """Refuse NUL in strings that become exec arguments (execve cannot carry it)."""
    for item in [value] if isinstance(value, str) else value if isinstance(value, list) else []:
        if isinstance(item, str) and "\0" in item:
            raise ValueError("cannot contain NUL characters")
    return value


def _path_text(value: str, what: str) -> None:
    """Characters and lengths every path dockerops hands to Docker must keep to.

    Docker's bind syntax (``host:container:mode``) cannot carry a ``:``.
    """
    if "\0" in value:
        raise ValueError(f"{what} cannot contain NUL")
    if _PATH_CONTROL_RE.search(value):
        raise ValueError(f"{what} cannot contain control characters")
    if ":" in value:
        raise ValueError(f"{what} cannot contain ':' (Docker's bind syntax cannot carry it)")
    if len(value.encode()) > PATH_MAX:
        raise ValueError(f"{what} is longer than {PATH_MAX} bytes")
    if any(len(part.encode()) > NAME_MAX for part in value.split("/")):
        raise ValueError(f"{what} has a component longer than {NAME_MAX} bytes")


def _normpath(path: str) -> str:
    """posixpath.normpath, but '//x' (which POSIX keeps) is '/x' here."""
    return "/" + posixpath.normpath(path).lstrip("/")


def _under(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def _host_path(value: str, info: ValidationInfo) -> str:
    """An absolute, normalised host path inside ``allowed_host_paths``."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError("host paths must be absolute")
    _path_text(value, "a host path")
    normal = _normpath(value)
    allowed = list((info.context or {}).get("allowed_host_paths") or DEFAULT_ALLOWED_HOST_PATHS)
    if not _under(normal, [_normpath(root) for root in allowed]):
        raise ValueError(f"{normal} is outside dockerops:allowed_host_paths ({', '.join(allowed)})")
    return normal


def _container_path(value: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError("container paths must be absolute")
    _path_text(value, "a container path")
    normal = _normpath(value)
    if normal == "/":
        raise ValueError("cannot mount over the container's root")
    return normal


def _field_error(field: str, message: str, value: Any) -> ValidationError:
    """A model-level check's error, reported at ``field``'s pillar path."""
    error = PydanticCustomError("value_error", "{message}", {"message": message})
    return ValidationError.from_exception_data(
        "ServiceSpec", [InitErrorDetails(type=error, loc=(field,), input=value)]
    )


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


ETCD_FORMATS = ("json", "yaml", "env", "template")
# A key (relative to its prefix) an env-format file can name: a variable name.
_ETCD_KEY_MAX = 1024


class EtcdSource(_Model):
    """A config file rendered from the keys under an etcd ``prefix`` (read at
    one revision, so a render never mixes two states of the store).

    ``format``: ``json`` or ``yaml`` (an object of the keys relative to the
    prefix), ``env`` (``KEY=value`` lines), or ``template`` (the salt://
    ``template`` rendered with jinja, ``values`` holding the keys). Every key
    in ``required`` must be present: a missing one fails the render, and
    nothing is written.
    """

    prefix: str
    format: Literal["json", "yaml", "env", "template"] = "json"
    template: str | None = None
    required: list[str] = []

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("/") or _PATH_CONTROL_RE.search(value):
            raise ValueError("a prefix is an absolute key such as /myapp/prod/")
        if len(value.encode()) > _ETCD_KEY_MAX:
            raise ValueError(f"a prefix is at most {_ETCD_KEY_MAX} bytes")
        return value

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None and (
            not value.startswith("salt://") or _PATH_CONTROL_RE.search(value) or value == "salt://"
        ):
            raise ValueError("a template is a salt:// URL")
        return value

    @field_validator("required")
    @classmethod
    def _required(cls, value: list[str]) -> list[str]:
        for key in value:
            if not key or _PATH_CONTROL_RE.search(key) or len(key.encode()) > _ETCD_KEY_MAX:
                raise ValueError(f"{_show(key)}: a required key is a key below the prefix")
        return value

    @model_validator(mode="after")
    def _template_with_format(self) -> EtcdSource:
        if (self.format == "template") != (self.template is not None):
            raise ValueError("format: template needs a template (salt://...), and only it")
        return self


class ConfigFile(_Model):
    """One file of a config directory: inline ``contents``, a salt://
    ``source``, or the keys under an ``etcd`` prefix."""

    contents: str | None = None
    source: str | None = None
    etcd: EtcdSource | None = None
    template: Literal["jinja"] | None = None
    mode: str = "0644"
    owner: str | int | None = None
    group: str | int | None = None
    # Like file.managed's show_changes: False keeps a file's diff out of output.
    # Unset: shown, except for a file from etcd, whose values (a password kept
    # in the store) would otherwise reach the job cache.
    show_diff: bool | None = None

    @property
    def diff_shown(self) -> bool:
        return self.show_diff if self.show_diff is not None else self.etcd is None

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> str:
        text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
        if not MODE_RE.fullmatch(text):
            raise ValueError("expected an octal mode such as '0644'")
        return "0" + text[-3:]

    @field_validator("owner", "group", mode="before")
    @classmethod
    def _account(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError("expected a user or group name, or a numeric id")
        text = str(value)
        if text.isascii() and text.isdigit():
            if int(text) > ACCOUNT_ID_MAX:
                raise ValueError(f"numeric ids are 0 to {ACCOUNT_ID_MAX}")
        elif not ACCOUNT_NAME_RE.fullmatch(text):
            raise ValueError("expected a user or group name, or a numeric id (not negative)")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("salt://"):
            raise ValueError("sources are salt:// URLs")
        if value is not None and (_PATH_CONTROL_RE.search(value) or value == "salt://"):
            raise ValueError("a salt:// URL names a file, without control characters")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> ConfigFile:
        given = [self.contents, self.source, self.etcd]
        if sum(item is not None for item in given) != 1:
            raise ValueError("give exactly one of contents, source or etcd")
        if self.etcd is not None and self.template is not None:
            raise ValueError("an etcd file is templated with etcd:format: template")
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
    # Validates each new version in a throwaway container of the service's
    # image before any replica sees it (see dockerops.configcheck). A string
    # runs with /bin/sh -c.
    check: str | list[str] | None = None
    # mount: a directory on the host, mounted read-only. image: the files
    # baked into a final image, <app tag>-<environment_short>-<config hash>,
    # built from the app image and pushed to its registry (dockerops.configimage).
    mode: Literal["mount", "image"] = "mount"
    # mode image: build the image where it is missing (False: expect it in the
    # registry, built elsewhere with dockerops.build_config_image).
    build: bool = True

    @model_validator(mode="after")
    def _image_mode(self) -> ConfigSpec:
        if self.mode == "image" and self.on_change != "rolling":
            raise ValueError(
                f"mode: image rolls a new image out; on_change is rolling (not {self.on_change})"
            )
        if self.mode == "image" and self.root is not None:
            raise ValueError("mode: image has no host directory (root)")
        if self.mode == "image":
            # Built outside the image, where its /etc/passwd is not at hand.
            named = [
                f"{name}:{field}"
                for name, item in sorted(self.files.items())
                for field in ("owner", "group")
                if isinstance(getattr(item, field), str) and not str(getattr(item, field)).isdigit()
            ]
            if named:
                raise ValueError(
                    f"mode: image takes numeric owner and group ids only ({', '.join(named)})"
                )
        return self

    @field_validator("check")
    @classmethod
    def _check(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value is None:
            return None
        parts = [value] if isinstance(value, str) else value
        if not parts or any(not part.strip() or "\0" in part for part in parts):
            raise ValueError("a check is a non-empty command (a string or a list of strings)")
        return value

    @property
    def check_command(self) -> list[str] | None:
        if self.check is None:
            return None
        return ["/bin/sh", "-c", self.check] if isinstance(self.check, str) else list(self.check)

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
                or _PATH_CONTROL_RE.search(name)
            ):
                raise ValueError(
                    f"{_show(name)}: config file names are relative paths without '..' "
                    "or control characters"
                )
            if len(normal.encode()) > PATH_MAX or any(
                len(part.encode()) > NAME_MAX for part in parts
            ):
                raise ValueError(
                    f"{_show(name)}: config file names are at most {PATH_MAX} bytes, "
                    f"each component at most {NAME_MAX}"
                )
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


# Docker's volume name grammar; at most NAME_MAX (the local driver makes a directory of it).
VOLUME_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{1,254}")
VOLUME_DRIVER_RE = re.compile(
    r"[a-z0-9][a-z0-9_.-]{0,63}(?:/[a-z0-9][a-z0-9_.-]{0,63})?(?::[A-Za-z0-9_.-]{1,128})?"
)
_VOLUME_OPTION_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# The local driver's filesystems dockerops mounts: network shares, tmpfs and a
# bind of an allowed host directory. A block device or any other filesystem
# would hand a container a host disk, which no allow-list covers.
LOCAL_VOLUME_TYPES = ("nfs", "nfs4", "cifs", "smb3", "tmpfs", "none")
_LOCAL_VOLUME_OPTIONS = ("type", "o", "device")


class DataMount(_Model):
    """Persistent data: a host directory bind-mounted (``host``), or a named
    Docker ``volume`` made with ``driver`` and ``driver_opts`` (see
    :meth:`dockerops.host.DockerHost.ensure_volume`)."""

    host: str | None = None
    volume: str | None = None
    container: str
    read_only: bool = False
    driver: str | None = None
    driver_opts: dict[str, str] = {}

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _host_path(value, info)

    @field_validator("volume")
    @classmethod
    def _volume(cls, value: str | None) -> str | None:
        if value is not None and not VOLUME_NAME_RE.fullmatch(value):
            raise ValueError(
                "a volume name is 2 to 255 characters of letters, digits, '_', '.' and '-', "
                "starting with a letter or digit"
            )
        return value

    @field_validator("container")
    @classmethod
    def _container(cls, value: str) -> str:
        return _container_path(value)

    @field_validator("driver")
    @classmethod
    def _driver(cls, value: str | None) -> str | None:
        if value is not None and not VOLUME_DRIVER_RE.fullmatch(value):
            raise ValueError("not a volume driver name (such as local, or a plugin's name)")
        return value

    @field_validator("driver_opts", mode="before")
    @classmethod
    def _option_text(cls, value: Any) -> Any:
        # Values are not echoed: a cifs ``o`` may carry a password.
        if not isinstance(value, Mapping):
            return value
        out, problems = {}, []
        for key, item in value.items():
            if not isinstance(key, str) or not _VOLUME_OPTION_KEY_RE.fullmatch(key):
                problems.append(f"{_show(key)}: not an option name")
            elif not isinstance(item, str):
                problems.append(f"{key}: values are strings (quote it)")
            elif _PATH_CONTROL_RE.search(item) or len(item) > PATH_MAX:
                problems.append(f"{key}: at most {PATH_MAX} characters, without control characters")
            else:
                out[key] = item
        if problems:
            raise ValueError("; ".join(problems))
        return out

    @field_validator("driver_opts")
    @classmethod
    def _local_options(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if not value or (info.data.get("driver") or "local") != "local":
            return value
        unknown = sorted(set(value) - set(_LOCAL_VOLUME_OPTIONS))
        if unknown:
            raise ValueError(f"the local driver takes type, o and device, not {', '.join(unknown)}")
        kind = value.get("type")
        if kind not in LOCAL_VOLUME_TYPES:
            raise ValueError(
                f"type: the local driver mounts {', '.join(LOCAL_VOLUME_TYPES)} here "
                "(none with o: bind and a device under dockerops:allowed_host_paths); "
                "a disk or another filesystem is not mounted into containers"
            )
        options = [part.strip() for part in value.get("o", "").split(",")]
        bind = "bind" in options or "rbind" in options
        if (kind == "none") != bind:
            raise ValueError("a bind is type: none with o: bind (and only that)")
        if not value.get("device"):
            raise ValueError(f"type {kind} needs its device")
        if bind:
            # The bind's source is a host directory: held to the allow-list.
            try:
                device = _host_path(value["device"], info)
            except ValueError as err:
                raise ValueError(f"device: {err}") from None
            return {**value, "device": device}
        return value

    @model_validator(mode="before")
    @classmethod
    def _source_given(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and "host" not in value and "volume" not in value:
            # The host path is what most entries give: said missing where it goes.
            missing = InitErrorDetails(type="missing", loc=("host",), input=value)
            raise ValidationError.from_exception_data("DataMount", [missing])
        return value

    @model_validator(mode="after")
    def _host_or_volume(self) -> DataMount:
        if (self.host is None) == (self.volume is None):
            raise ValueError("give exactly one of host (a directory) or volume (a name)")
        if self.host is not None and (self.driver is not None or self.driver_opts):
            raise ValueError("driver and driver_opts belong to a volume, not a host path")
        return self

    @property
    def volume_driver(self) -> str:
        """The driver a volume is made with (Docker's default: local)."""
        return self.driver or "local"

    @property
    def bind_device(self) -> str | None:
        """The host directory a local bind volume (type none, o bind) mounts."""
        if self.volume is None or self.volume_driver != "local":
            return None
        if self.driver_opts.get("type") != "none":
            return None
        return self.driver_opts.get("device")

    @property
    def source(self) -> str:
        """The host path, or the volume's name."""
        source = self.host if self.host is not None else self.volume
        assert source is not None
        return source

    def names(self) -> tuple[str, ...]:
        """What ``backup:paths`` may call this mount by."""
        return (self.container, self.source)


class FileLogsSpec(_Model):
    """Log files the application writes under ``path`` in the container: each
    slot's host directory ``<dockerops:logs:root>/<service>/<slot>`` is mounted
    there, so they outlive the container (see :mod:`dockerops.filelogs`)."""

    path: str

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _container_path(value)


class LogSettings(_Model):
    """``dockerops:logs``: where file logs live on the host, and what the
    formula writes for them (forwarder inputs, a logrotate rule)."""

    root: str = DEFAULT_LOG_ROOT
    filebeat_dir: str = "/etc/filebeat/inputs.d"
    rsyslog_dir: str = "/etc/rsyslog.d"
    logrotate_dir: str = "/etc/logrotate.d"
    frequency: Literal["daily", "weekly", "monthly"] = "daily"
    rotate: Annotated[int, Field(ge=1, le=1000)] = 7
    maxsize: str = "100M"
    # False when the admin's rsyslog config loads imfile already.
    rsyslog_load_imfile: bool = True

    @field_validator("root", "filebeat_dir", "rsyslog_dir", "logrotate_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not isinstance(value, str) or not value.startswith("/"):
            raise ValueError("host paths must be absolute")
        _path_text(value, "a host path")
        if _normpath(value) == "/":
            raise ValueError("not /")
        return _normpath(value)

    @field_validator("maxsize")
    @classmethod
    def _maxsize(cls, value: str) -> str:
        if not re.fullmatch(r"[1-9][0-9]{0,9}[kMG]?", value):
            raise ValueError("a logrotate size such as 100M, 500k or 1G")
        return value


class LoggingSpec(_Model):
    """Docker's logging driver and its options, checked against the driver's
    documented options (see :mod:`dockerops.logdrivers`)."""

    driver: str = "json-file"
    # Validated when left out too: gelf without options lacks its address.
    options: dict[str, str] = Field(default={}, validate_default=True)

    @field_validator("driver")
    @classmethod
    def _driver(cls, value: str) -> str:
        if not LOG_DRIVER_RE.fullmatch(value):
            raise ValueError("not a logging driver name")
        problem = logdrivers.driver_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("options", mode="before")
    @classmethod
    def _options(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        out, problems = {}, []
        for key, item in value.items():
            try:
                out[str(key)] = logdrivers.option_text(item)
            except ValueError as err:
                problems.append(f"{_show(key)}: {err}")
        if problems:
            raise ValueError("; ".join(problems))
        return out

    @field_validator("options")
    @classmethod
    def _known_options(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        driver = info.data.get("driver")
        if isinstance(driver, str):
            problems = logdrivers.option_problems(driver, value)
            if problems:
                raise ValueError("; ".join(problems))
        return value

    @property
    def blocking_warning(self) -> str | None:
        """Why this driver can block the container's writes (None: it cannot)."""
        return logdrivers.blocking_warning(self.driver, self.effective_options)

    @property
    def effective_options(self) -> dict[str, str]:
        return {**DEFAULT_LOG_OPTIONS.get(self.driver, {}), **self.options}


class HealthcheckSpec(_Model):
    """A Docker healthcheck; ``test`` as a string runs with the container's shell."""

    test: Annotated[list[str] | str, AfterValidator(_no_nul)]
    interval: HealthcheckDuration = 5.0
    timeout: HealthcheckDuration = 3.0
    retries: Annotated[int, Field(ge=1, le=100)] = 3
    start_period: HealthcheckDuration = 0.0

    @field_validator("interval", "timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value < 0.001:
            raise ValueError("must be at least 1ms")
        return value

    @field_validator("start_period")
    @classmethod
    def _start_period(cls, value: float) -> float:
        if 0 < value < 0.001:
            raise ValueError("must be 0 or at least 1ms")
        return value

    @property
    def docker_test(self) -> list[str]:
        if isinstance(self.test, str):
            return ["CMD-SHELL", self.test]
        return self.test if self.test[:1] in (["CMD"], ["CMD-SHELL"]) else ["CMD", *self.test]


_BYTES_RE = re.compile(r"([0-9]{1,15})\s*([bkmg]?)b?", re.IGNORECASE)
_BYTE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
# Docker refuses a memory limit below 6 MiB.
MEMORY_MIN = 6 * 1024**2


def parse_bytes(value: Any) -> int:
    """``536870912``, ``"512m"``, ``"1g"``, ``"64k"`` -> bytes (binary units, as Docker's)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512m or 1g")
    if isinstance(value, int):
        return value
    match = _BYTES_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError("expected a size such as 512m or 1g")
    return int(match.group(1)) * _BYTE_UNITS[match.group(2).lower()]


Memory = Annotated[int, BeforeValidator(parse_bytes), Field(ge=MEMORY_MIN, le=2**50)]


class ResourcesSpec(_Model):
    """Limits on what a replica may use (Docker's ``--memory``, ``--cpus``...)."""

    memory: Memory | None = None
    memory_reservation: Memory | None = None
    cpus: Annotated[float, Field(ge=0.01, le=1024, allow_inf_nan=False)] | None = None
    pids_limit: Annotated[int, Field(ge=1, le=4_194_304)] | None = None

    @model_validator(mode="after")
    def _reservation(self) -> ResourcesSpec:
        if self.memory and self.memory_reservation and self.memory_reservation > self.memory:
            raise ValueError("memory_reservation must not exceed memory")
        return self


ULIMIT_NAMES = (
    *("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile"),
    *("nproc", "rss", "rtprio", "rttime", "sigpending", "stack"),
)


class UlimitSpec(_Model):
    """``nofile: 65536`` (soft = hard) or ``nofile: {soft: 1024, hard: 65536}``."""

    soft: Annotated[int, Field(ge=-1, le=2**63 - 1)]
    hard: Annotated[int, Field(ge=-1, le=2**63 - 1)]

    @model_validator(mode="before")
    @classmethod
    def _one_number(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected a number or {soft, hard}")
        if isinstance(value, int):
            return {"soft": value, "hard": value}
        return value

    @model_validator(mode="after")
    def _order(self) -> UlimitSpec:
        if self.hard != -1 and (self.soft == -1 or self.soft > self.hard):
            raise ValueError("soft must not exceed hard")
        return self


# Docker network names; the built-in ones are not user-defined bridges.
NETWORK_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}")
RESERVED_NETWORKS = ("bridge", "host", "none", "default")
# A DNS name (an alias, an extra_hosts name): labels of letters, digits, '-'.
HOSTNAME_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def _hostname(value: Any) -> Any:
    if isinstance(value, str) and not HOSTNAME_RE.fullmatch(value):
        raise ValueError(f"{_show(value)} is not a valid host name")
    return value


Hostname = Annotated[str, AfterValidator(_hostname)]


class NetworkEntry(_Model):
    """A service's membership of one network: the names it answers to there
    (besides the service name, always an alias)."""

    aliases: list[Hostname] = []


def _ip(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return str(ip_address(value))
        except ValueError:
            raise ValueError(f"{_show(value)} is not an IP address") from None
    return value


IPAddress = Annotated[str, AfterValidator(_ip)]
EXPECTED_PORT_RE = re.compile(r"([0-9]{1,5})(?:/(tcp|udp))?")


def _expected_port(value: Any) -> Any:
    """``8080``, ``"8080"``, ``"9090/udp"``: normalized to ``port/protocol`` (tcp by default)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    match = EXPECTED_PORT_RE.fullmatch(value) if isinstance(value, str) else None
    if not match or not 1 <= int(match.group(1)) <= 65535:
        raise ValueError("expected a port 1-65535, optionally with /tcp or /udp")
    return f"{int(match.group(1))}/{match.group(2) or 'tcp'}"


# A port the app must listen on inside its container (dockerops.check_ports).
ExpectedPort = Annotated[str, BeforeValidator(_expected_port)]
# A capability name, as Docker takes it (CAP_ prefix optional; ALL for every one).
CAPABILITY_RE = re.compile(r"(?:CAP_)?[A-Z_]{2,32}")
# security_opt entries Docker knows: label=..., apparmor=..., seccomp=...,
# no-new-privileges[:true|false], systempaths=unconfined, writable-cgroups...
SECURITY_OPT_RE = re.compile(r"[a-z][a-z-]{1,31}(?:[=:][A-Za-z0-9_.:/=,-]{1,512})?")
# A user as Docker takes it: name or uid, optionally :group or :gid.
USER_RE = re.compile(
    r"(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}|[0-9]{1,10})(?::(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}|[0-9]{1,10}))?"
)
TMPFS_OPTIONS_RE = re.compile(r"(?:[a-z]+(?:=[A-Za-z0-9]+)?)(?:,[a-z]+(?:=[A-Za-z0-9]+)?)*|")
STOP_GRACE_MAX = HOUR


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
    health_timeout: UpdateDuration = 60.0
    min_healthy_time: UpdateDuration | None = None
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
    # dockerops:environment_short (config image tags); unset: environment.
    environment_short: str | None = None
    # The container gets the store's address and its environment as env vars
    # (DOCKEROPS_ETCD_ENDPOINTS, DOCKEROPS_ENVIRONMENT) and fetches its config itself.
    etcd_env: StrictBool = False
    # Hardening and runtime inputs (see dockerops.inputs); unset: Docker's default.
    resources: ResourcesSpec = ResourcesSpec()
    ulimits: dict[str, UlimitSpec] = {}
    user: str | None = None
    working_dir: str | None = None
    entrypoint: list[str] | None = None
    read_only: bool = False
    tmpfs: dict[str, str] = {}
    cap_add: list[str] = []
    cap_drop: list[str] = []
    security_opt: list[str] = []
    no_new_privileges: bool = True
    privileged: bool = False
    init: bool | None = None
    stop_signal: str | None = None
    stop_grace_period: Annotated[Duration, _at_most(STOP_GRACE_MAX)] | None = None
    networks: dict[str, NetworkEntry] = {}
    extra_hosts: dict[Hostname, IPAddress] = {}
    dns: list[IPAddress] = []
    logs: FileLogsSpec | None = None
    # Not a container input (changing it recreates nothing): dockerops.backup.
    backup: BackupSpec | None = None
    # Not a container input (changing it recreates nothing): what
    # dockerops.check_ports and the beacon expect the app to listen on inside.
    expect_ports: list[ExpectedPort] = []

    @field_validator("ulimits")
    @classmethod
    def _ulimits(cls, value: dict[str, UlimitSpec]) -> dict[str, UlimitSpec]:
        unknown = sorted(set(value) - set(ULIMIT_NAMES))
        if unknown:
            raise ValueError(
                f"unknown ulimit {', '.join(map(_show, unknown))} "
                f"(one of {', '.join(ULIMIT_NAMES)})"
            )
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not USER_RE.fullmatch(value):
            raise ValueError("expected user, uid, user:group or uid:gid")
        return value

    @field_validator("working_dir")
    @classmethod
    def _working_dir(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/"):
            raise ValueError("container paths must be absolute")
        _path_text(value, "a container path")
        return _normpath(value)

    @field_validator("entrypoint", mode="before")
    @classmethod
    def _entrypoint(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = shlex.split(value)
            except ValueError as err:
                raise ValueError(f"cannot split the entrypoint: {err}") from None
        if isinstance(value, list) and not value:
            raise ValueError("an entrypoint needs at least the program to run")
        return _no_nul(value)

    @field_validator("tmpfs", mode="before")
    @classmethod
    def _tmpfs(cls, value: Any) -> Any:
        if isinstance(value, list):  # a list of paths: Docker's default options
            if not all(isinstance(path, str) for path in value):
                raise ValueError("expected container paths")
            value = {path: "" for path in value}
        if not isinstance(value, Mapping):
            return value
        out = {}
        for path, options in value.items():
            options = "" if options is None else options
            if not isinstance(options, str) or not TMPFS_OPTIONS_RE.fullmatch(options):
                raise ValueError(f"{_show(path)}: options are like size=64m,mode=1777")
            out[_container_path(path)] = options
        return out

    @field_validator("cap_add", "cap_drop", mode="before")
    @classmethod
    def _capabilities(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        out = []
        for item in value:
            name = str(item).upper() if isinstance(item, str) else item
            if not isinstance(name, str) or not CAPABILITY_RE.fullmatch(name):
                raise ValueError(f"{_show(item)} is not a capability name")
            out.append(name if name == "ALL" or name.startswith("CAP_") else "CAP_" + name)
        return sorted(set(out))

    @field_validator("security_opt")
    @classmethod
    def _security_opt(cls, value: list[str]) -> list[str]:
        for item in value:
            if not SECURITY_OPT_RE.fullmatch(item):
                raise ValueError(f"{_show(item)} is not a security option")
        return value

    @field_validator("stop_signal")
    @classmethod
    def _stop_signal(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _signal_policy(f"signal:{value}").split(":", 1)[1]

    @field_validator("networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, list):  # [backend, frontend]: no extra aliases
            if not all(isinstance(name, str) for name in value):
                raise ValueError("expected network names")
            value = {name: {} for name in value}
        if not isinstance(value, Mapping):
            return value
        for name in value:
            if not isinstance(name, str) or not NETWORK_NAME_RE.fullmatch(name):
                raise ValueError(f"{_show(name)} is not a network name")
            if name in RESERVED_NETWORKS:
                raise ValueError(
                    f"{name} is Docker's own network; name a user-defined bridge network"
                )
        return {name: {} if entry is None else entry for name, entry in value.items()}

    @field_validator("privileged")
    @classmethod
    def _privileged(cls, value: bool, info: ValidationInfo) -> bool:
        if value and not (info.context or {}).get("allow_privileged"):
            raise ValueError(
                "privileged containers are refused on this minion (set the minion "
                "option dockerops.allow_privileged: True to allow them)"
            )
        return value

    @model_validator(mode="after")
    def _tmpfs_targets(self) -> ServiceSpec:
        mounted = {m.container for m in self.data} | ({self.config.path} if self.config else set())
        mounted |= {self.logs.path} if self.logs else set()
        both = sorted(set(self.tmpfs) & mounted)
        if both:
            raise ValueError(f"{', '.join(both)} is both a tmpfs and a mount")
        return self

    @field_validator("replicas", mode="before")
    @classmethod
    def _replicas(cls, value: Any) -> Any:
        if isinstance(value, bool):  # YAML's yes/no is not a count
            raise ValueError("expected a number of replicas, not a boolean")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not SERVICE_NAME_RE.fullmatch(value):
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
        if len(value) > REPOSITORY_MAX or not REPOSITORY_RE.fullmatch(value):
            raise ValueError("not a valid image repository reference")
        return value

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        if not TAG_RE.fullmatch(value):
            raise ValueError("not a valid image tag")
        return value

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = ["/bin/sh", "-c", value]
        return _no_nul(value)

    @field_validator("env", "secrets", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        out, problems = {}, []
        # Every bad entry is reported, not only the first. Values are never shown.
        for key, item in value.items():
            if not isinstance(key, str) or not ENV_NAME_RE.fullmatch(key):
                problems.append(f"{_show(key)} is not a valid environment variable name")
                continue
            if isinstance(item, bool):
                item = "true" if item else "false"
            if not isinstance(item, (str, int, float)):
                problems.append(f"{key}: values must be strings or numbers")
                continue
            if isinstance(item, float) and not math.isfinite(item):
                problems.append(f"{key}: values must be finite numbers")
                continue
            try:
                text = str(item)
            except ValueError:  # an int too long to print
                problems.append(f"{key}: value too long")
                continue
            if _CONTROL_RE.search(text):
                problems.append(
                    f"{key}: values cannot contain control characters (newline and tab are fine)"
                )
                continue
            out[key] = text
        if problems:
            raise ValueError("; ".join(problems))
        return out

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: list[PortSpec]) -> list[PortSpec]:
        seen = set()
        for port in value:
            key = (port.container, port.protocol)
            if key in seen:
                raise ValueError(f"container port {port.container}/{port.protocol} listed twice")
            seen.add(key)
        return value

    @field_validator("expect_ports")
    @classmethod
    def _expect_ports(cls, value: list[str]) -> list[str]:
        twice = sorted({port for port in value if value.count(port) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed twice")
        return value

    @model_validator(mode="after")
    def _port_slots(self) -> ServiceSpec:
        """Slot i (replicas 1..N, then start-first spares) publishes host + i - 1:
        every slot's port must be valid and no two published ports may collide
        on this host. A check of the whole model: it needs replicas and update,
        validated, whatever the order of the fields."""
        slots = self.replicas or 1
        slots += self.update.spares(slots)
        taken: dict[tuple[str, int, str], int] = {}
        for port in self.ports:
            if port.host is None:
                continue
            last = port.host + slots - 1
            if last > 65535:
                raise _field_error(
                    "ports",
                    f"host port {port.host} with {slots} slots (replicas and start-first "
                    "spares) runs past 65535",
                    self.ports,
                )
            for host_port in range(port.host, last + 1):
                where = (port.host_ip, host_port, port.protocol)
                if where in taken:
                    raise _field_error(
                        "ports",
                        f"host port {port.host_ip}:{host_port}/{port.protocol} is published "
                        f"twice (container ports {taken[where]} and {port.container})",
                        self.ports,
                    )
                taken[where] = port.container
        return self

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSpec:
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise ValueError(f"{', '.join(both)} set in both env and secrets")
        targets = [m.container for m in self.data] + ([self.config.path] if self.config else [])
        targets += [self.logs.path] if self.logs else []
        dupes = sorted({t for t in targets if targets.count(t) > 1})
        if dupes:
            raise ValueError(f"{', '.join(dupes)} mounted twice in the container")
        return self

    @model_validator(mode="after")
    def _backup_paths(self) -> ServiceSpec:
        if self.backup is None:
            return self
        if not self.data:
            raise _field_error("backup", "the service has no data mounts to back up", {})
        ephemeral = [
            str(mount.volume)
            for mount in self.backup_mounts()
            if mount.volume
            and mount.volume_driver == "local"
            and mount.driver_opts.get("type") == "tmpfs"
        ]
        if ephemeral:
            raise _field_error(
                "backup",
                f"{', '.join(ephemeral)} is a tmpfs volume: its data is gone once no "
                "container uses it (a stop or a restore), so it cannot be restored; leave it "
                "out with backup:paths",
                self.backup.paths or [],
            )
        if self.backup.paths is not None:
            names = {name for mount in self.data for name in mount.names()}
            unknown = [path for path in self.backup.paths if path not in names]
            if unknown:
                raise _field_error(
                    "backup",
                    f"paths: {', '.join(map(_show, unknown))} is not one of the service's "
                    "data mounts (name each by its container path, host path or volume)",
                    self.backup.paths,
                )
        return self

    def backup_mounts(self) -> list[DataMount]:
        """The data mounts ``backup`` covers (its ``paths``, or every one)."""
        if self.backup is None:
            return []
        wanted = self.backup.paths
        if wanted is None:
            return list(self.data)
        return [mount for mount in self.data if set(mount.names()) & set(wanted)]

    @property
    def config_root(self) -> str | None:
        if self.config is None:
            return None
        return self.config.root or DEFAULT_CONFIG_ROOT.format(service=self.name)

    # The allow-list the host paths were validated against (not pillar input).
    _allowed_host_paths: tuple[str, ...] = PrivateAttr(default=DEFAULT_ALLOWED_HOST_PATHS)
    # dockerops:logs:root, where the file logs of every service live.
    _log_root: str = PrivateAttr(default=DEFAULT_LOG_ROOT)

    @model_validator(mode="after")
    def _remember_allowed(self, info: ValidationInfo) -> ServiceSpec:
        allowed = (info.context or {}).get("allowed_host_paths") or DEFAULT_ALLOWED_HOST_PATHS
        self._allowed_host_paths = tuple(_normpath(path) for path in allowed)
        self._log_root = (info.context or {}).get("log_root") or DEFAULT_LOG_ROOT
        return self

    def trusted_root(self, host_path: str) -> str:
        """The allow-list root ``host_path`` lies under (the innermost, if nested).

        The path down to it is the admin's and is resolved normally; every
        component below it is dockerops' to open without following symlinks.
        """
        roots = [root for root in self._allowed_host_paths if _under(host_path, [root])]
        if not roots:
            raise ValueError(f"{host_path} is outside dockerops:allowed_host_paths")
        return max(roots, key=len)

    @property
    def all_env(self) -> dict[str, str]:
        return {**self.env, **self.secrets}

    @property
    def secret_values(self) -> list[str]:
        return [value for value in self.secrets.values() if value]

    @field_validator("restart_policy")
    @classmethod
    def _restart(cls, value: str) -> str:
        if not RESTART_RE.fullmatch(value):
            raise ValueError("expected no, always, unless-stopped, on-failure or on-failure:N")
        return value

    @property
    def image_ref(self) -> str:
        return f"{self.image}:{self.tag}"

    @property
    def env_short(self) -> str:
        """The environment's name in config image tags."""
        return self.environment_short or self.environment

    @property
    def etcd_files(self) -> dict[str, EtcdSource]:
        """The config files rendered from etcd, by name."""
        if self.config is None:
            return {}
        return {name: f.etcd for name, f in self.config.files.items() if f.etcd is not None}

    @field_validator("environment_short")
    @classmethod
    def _env_short(cls, value: str | None) -> str | None:
        if value is not None and not ENV_SHORT_RE.fullmatch(value):
            raise ValueError("letters, digits, '_', '.' and '-' (at most 32)")
        return value

    @property
    def slots(self) -> int:
        """Slots the service's containers may occupy: its replicas, then spares."""
        return self.replicas + self.update.spares(self.replicas)

    @property
    def log_dir(self) -> str | None:
        """The host directory of the service's file logs (one subdirectory per
        slot), or None when it declares no ``logs``."""
        if self.logs is None:
            return None
        return f"{self._log_root.rstrip('/')}/{self.name}"


BACKUP_KEEP_MAX = 100_000
# A consistency window (stop, pause, exec) holds the service's lock: bounded.
BACKUP_EXEC_TIMEOUT_MAX = 24 * HOUR
_REMOTE_REPOSITORY_RE = re.compile(r"(sftp|rest|s3|b2|azure|gs|swift|rclone):\S+")


class BackupKeep(_Model):
    """How many snapshots retention keeps (restic's ``--keep-*``); unset ones keep none."""

    last: Annotated[int, Field(ge=1, le=BACKUP_KEEP_MAX)] | None = None
    hourly: Annotated[int, Field(ge=1, le=BACKUP_KEEP_MAX)] | None = None
    daily: Annotated[int, Field(ge=1, le=BACKUP_KEEP_MAX)] | None = None
    weekly: Annotated[int, Field(ge=1, le=BACKUP_KEEP_MAX)] | None = None
    monthly: Annotated[int, Field(ge=1, le=BACKUP_KEEP_MAX)] | None = None
    yearly: Annotated[int, Field(ge=1, le=BACKUP_KEEP_MAX)] | None = None

    @model_validator(mode="after")
    def _something(self) -> BackupKeep:
        if not self.flags():
            raise ValueError(
                "keep at least one kind of snapshot (last, hourly, daily, weekly, monthly, "
                "yearly); leave keep out to keep every snapshot"
            )
        return self

    def flags(self) -> list[str]:
        """restic forget's options for this policy."""
        out = []
        for kind in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
            count = getattr(self, kind)
            if count is not None:
                out.append(f"--keep-{kind}={count}")
        return out


class BackupSchedule(_Model):
    """When Salt's scheduler on the minion runs the backup: an interval
    (``seconds``/``minutes``/``hours``/``days``, added up) or ``when``
    (times dateutil understands, such as ``"03:00"``), and an optional
    random ``splay`` in seconds so that minions do not all start at once."""

    seconds: Annotated[int, Field(ge=1, le=10**7)] | None = None
    minutes: Annotated[int, Field(ge=1, le=10**6)] | None = None
    hours: Annotated[int, Field(ge=1, le=10**5)] | None = None
    days: Annotated[int, Field(ge=1, le=10**4)] | None = None
    when: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = None
    splay: Annotated[int, Field(ge=1, le=86400)] | None = None

    @field_validator("when", mode="before")
    @classmethod
    def _when(cls, value: Any) -> Any:
        value = [value] if isinstance(value, str) else value
        if isinstance(value, list):
            for item in value:
                if isinstance(item, str) and _CONTROL_RE.search(item):
                    raise ValueError("no control characters")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> BackupSchedule:
        interval = any(
            getattr(self, unit) is not None for unit in ("seconds", "minutes", "hours", "days")
        )
        if interval == bool(self.when):
            raise ValueError(
                "give either an interval (seconds, minutes, hours, days) or when, not "
                + ("both" if interval else "neither")
            )
        return self

    def scheduler_args(self) -> dict[str, Any]:
        """The keys of a Salt scheduler entry (``schedule.present``)."""
        out: dict[str, Any] = {
            key: value for key, value in self.model_dump().items() if value is not None
        }
        return out


class BackupSpec(_Model):
    """``backup`` of a service: how its data mounts are snapshotted (see
    :mod:`dockerops.backup`)."""

    # No default: stopping a service costs downtime, not stopping a database
    # gives a torn copy. The operator says which.
    consistency: Literal["stop", "pause", "exec", "none"]
    exec: list[str] | None = None
    exec_timeout: Annotated[Duration, _at_most(BACKUP_EXEC_TIMEOUT_MAX)] = 600.0
    # Run in one replica once a restore is healthy (loading a dump exec wrote).
    restore_exec: list[str] | None = None
    keep: BackupKeep | None = None
    schedule: BackupSchedule | None = None
    # Data mounts to back up (container path, host path or volume name); all when unset.
    paths: list[str] | None = None

    @field_validator("exec", "restore_exec", mode="before")
    @classmethod
    def _exec(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = ["/bin/sh", "-c", value]
        if isinstance(value, list) and not value:
            raise ValueError("a command needs at least the program to run")
        return _no_nul(value)

    @model_validator(mode="after")
    def _exec_with_mode(self) -> BackupSpec:
        if self.consistency == "exec" and not self.exec:
            raise ValueError("consistency exec needs the command to run: exec")
        if self.exec and self.consistency != "exec":
            raise ValueError(f"exec is run only with consistency exec, not {self.consistency}")
        return self


class BackupSettings(_Model):
    """``dockerops:backup``: the restic repository every service's snapshots go
    to, and its password (a secret: never shown, passed to restic through a
    pipe, never on its command line)."""

    repository: str | None = Field(default=None, repr=False)  # may carry credentials
    password: str | None = Field(default=None, repr=False)

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if _PATH_CONTROL_RE.search(value) or len(value) > PATH_MAX:
            raise ValueError("not a repository location")
        path = value.removeprefix("local:")
        if path.startswith("/"):
            if _normpath(path) == "/":
                raise ValueError("not /")
            return _normpath(path)
        if not _REMOTE_REPOSITORY_RE.fullmatch(value):
            raise ValueError(
                "an absolute path, or a restic location: sftp:, rest:, s3:, b2:, azure:, "
                "gs:, swift: or rclone:"
            )
        return value

    @field_validator("password")
    @classmethod
    def _password(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value or "\x00" in value or "\n" in value:
            raise ValueError("a password is one non-empty line")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError("a password is UTF-8 text") from None
        # Handed to restic through a pipe, whose buffer holds it whole.
        if size > 4096:
            raise ValueError("a password is at most 4096 bytes")
        return value

    @property
    def local_path(self) -> str | None:
        """The repository's directory when it is on this host."""
        if self.repository is None or not self.repository.startswith("/"):
            return None
        return self.repository


def _credential_line(cls: Any, value: str | None) -> str | None:
    """A user name or password: one non-empty line, at most 4096 characters."""
    if value is not None and (not value or _PATH_CONTROL_RE.search(value) or len(value) > 4096):
        raise ValueError("one non-empty line, at most 4096 characters")
    return value


class RegistrySettings(_Model):
    """One registry (``dockerops:registries:<host[:port]>``): its credentials
    (the password is a secret: never shown) and whether it speaks plain HTTP
    (``insecure``; loopback registries always may, as Docker allows)."""

    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    insecure: bool = False

    _line = field_validator("username", "password")(classmethod(_credential_line))

    @model_validator(mode="after")
    def _both(self) -> RegistrySettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        return self


_ENDPOINT_RE = re.compile(
    r"https?://[A-Za-z0-9.\-]+(?::[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?"
)
ETCD_TIMEOUT_MAX = 60.0


class EtcdSettings(_Model):
    """``dockerops:etcd``: the store config files may come from (etcd v3, read
    through its HTTP/JSON gateway). The password is a secret."""

    endpoints: list[str] = []
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    timeout: Annotated[Duration, _at_most(ETCD_TIMEOUT_MAX)] = 5.0

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            text = item.rstrip("/") if isinstance(item, str) else ""
            if not _ENDPOINT_RE.fullmatch(text):
                raise ValueError(f"{_show(item)}: an endpoint is http(s)://host:port")
            out.append(text)
        return out

    _line = field_validator("username", "password")(classmethod(_credential_line))

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _file(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or _PATH_CONTROL_RE.search(value)):
            raise ValueError("an absolute path on the minion")
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("a timeout is more than 0")
        return value

    @model_validator(mode="after")
    def _pairs(self) -> EtcdSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file, or neither")
        if self.password is not None:
            # The password, then a token on every request, would cross the network in clear.
            plain = [e for e in self.endpoints if e.startswith("http://") and not _loopback_url(e)]
            if plain:
                raise ValueError(
                    f"endpoints: {', '.join(plain)} would carry the password in clear text; "
                    "use https:// (plain http only to 127.0.0.1, ::1 or localhost)"
                )
        return self


def _loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


class CrashLoopSpec(_Model):
    """A replica restarted ``restarts`` times within ``window`` is crash-looping."""

    restarts: Annotated[int, Field(ge=1, le=1000)] = 3
    window: Annotated[Duration, _at_most(7 * 24 * HOUR)] = 300.0

    @field_validator("window")
    @classmethod
    def _window(cls, value: float) -> float:
        if value < 1:
            raise ValueError("must be at least 1s")
        return value


class MonitoringSpec(_Model):
    """``dockerops:monitoring``: how status and the beacon judge replicas."""

    crash_loop: CrashLoopSpec = CrashLoopSpec()


class PillarRoot(_Model):
    """The top of ``dockerops`` pillar; services are validated one by one."""

    environment: str = "default"
    defaults: dict[str, Any] = {}
    services: dict[str, dict[str, Any]] = {}
    allowed_host_paths: list[str] = list(DEFAULT_ALLOWED_HOST_PATHS)
    logs: LogSettings = LogSettings()
    monitoring: MonitoringSpec = MonitoringSpec()
    backup: BackupSettings = BackupSettings()
    # The environment's short name in config image tags (default: environment).
    environment_short: str | None = None
    registries: dict[str, RegistrySettings] = {}
    etcd: EtcdSettings = EtcdSettings()

    @field_validator("environment_short")
    @classmethod
    def _short(cls, value: str | None) -> str | None:
        if value is not None and not ENV_SHORT_RE.fullmatch(value):
            raise ValueError(
                "an environment's short name is letters, digits, '_', '.' and '-' "
                "(at most 32, part of an image tag)"
            )
        return value

    @field_validator("registries")
    @classmethod
    def _registries(cls, value: dict[str, RegistrySettings]) -> dict[str, RegistrySettings]:
        for host in value:
            if not re.fullmatch(_DOMAIN, host):
                raise ValueError(f"{_show(host)}: a registry is host or host:port")
        return value

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

    @model_validator(mode="after")
    def _repository_apart(self) -> PillarRoot:
        # Containers write below the allow-list: a repository there could be
        # read or damaged by one, and would be backed up into itself.
        local = self.backup.local_path
        if local and _under(local, self.allowed_host_paths):
            raise _field_error(
                "backup",
                f"repository: {local} is inside dockerops:allowed_host_paths, where "
                "containers write; keep the repository apart",
                {},
            )
        for root in self.allowed_host_paths:
            if local and _under(root, [local]):
                raise _field_error(
                    "backup", f"repository: {local} contains the allowed host path {root}", {}
                )
        return self


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


def load_monitoring(pillar: Mapping[str, Any]) -> MonitoringSpec:
    """``dockerops:monitoring`` alone, validated: status and the beacon need only
    it, and must not fail on a problem elsewhere in pillar (a bad service)."""
    raw = pillar.get(PILLAR_KEY) or {}
    monitoring = raw.get("monitoring") if isinstance(raw, Mapping) else None
    try:
        return MonitoringSpec.model_validate(dict(monitoring or {}))
    except (ValidationError, TypeError, ValueError) as err:
        if isinstance(err, ValidationError):
            raise SpecError(_problems(err, (PILLAR_KEY, "monitoring"), MonitoringSpec)) from None
        raise SpecError([f"{PILLAR_KEY}:monitoring: expected a mapping"]) from None


def service_names(pillar: Mapping[str, Any]) -> list[str]:
    """The services declared in pillar, sorted."""
    return sorted(load_root(pillar).services)


def services_with_config(pillar: Mapping[str, Any]) -> list[str]:
    """The pillar services that have a config directory, sorted: ``config`` set
    on the service or under ``dockerops:defaults``, merged as :func:`load_service`
    merges them. The formula gives each a ``config_managed`` state.

    Read without validating, so any pillar the formula renders gets an answer:
    a service whose config is invalid still gets its state, which then fails
    naming the pillar path.
    """
    raw = pillar.get(PILLAR_KEY)
    services = raw.get("services") if isinstance(raw, Mapping) else None
    if not isinstance(services, Mapping):
        return []
    defaults = raw.get("defaults") if isinstance(raw, Mapping) else None
    if not isinstance(defaults, Mapping):
        defaults = {}
    return sorted(
        name
        for name, declared in services.items()
        if isinstance(name, str)
        and isinstance(declared, Mapping)
        and deep_merge(defaults, declared).get("config")
    )


def check_service_name(name: Any) -> str:
    """``name`` if it is a valid service name; a SpecError otherwise.

    Every entry point taking a service name checks it: an empty name must
    never end up meaning "every service" (a label filter without a value).
    """
    if not isinstance(name, str) or not SERVICE_NAME_RE.fullmatch(name):
        raise SpecError(
            [
                f"name: {_show(name)} is not a service name (lowercase letters, digits, "
                "'-' and '_', at most 50, starting with a letter or digit)"
            ]
        )
    return name


def load_service(
    pillar: Mapping[str, Any],
    name: str,
    overrides: Mapping[str, Any] | None = None,
    allow_privileged: bool = False,
) -> ServiceSpec:
    """Validate one service: pillar defaults, then the service, then ``overrides``;
    then check it against every other service of the host (see :mod:`dockerops.layout`).

    ``allow_privileged`` is the minion's own say (option
    ``dockerops.allow_privileged``): pillar alone cannot ask for a privileged
    container."""
    root = load_root(pillar)
    if name not in root.services:
        check_service_name(name)
    spec = _validate_service(root, name, overrides, allow_privileged)
    host = _host_layout(pillar, root)
    mine = layout.footprint(spec)
    if host.footprints.get(name) == mine:
        clashes = host.problems.get(name, [])
    else:  # overridden: compared anew with the others
        others = [f for other, f in host.footprints.items() if other != name]
        clashes = layout.problems([mine, *others], root.allowed_host_paths, name)
    if clashes:
        raise SpecError(clashes)
    return spec


@dataclass(frozen=True)
class _HostLayout:
    footprints: dict[str, layout.Footprint]
    problems: dict[str, list[str]]


# The host layout per pillar content: a highstate loads each service for each
# of its states, and must not validate and compare every service every time.
_LAYOUTS: dict[str, _HostLayout] = {}
_LAYOUTS_KEPT = 8


def _host_layout(pillar: Mapping[str, Any], root: PillarRoot) -> _HostLayout:
    """Every valid pillar service's footprint (an invalid one fails on its own),
    and the clashes between them."""
    try:
        blob = json.dumps(pillar.get(PILLAR_KEY), sort_keys=True, default=repr)
        key: str | None = hashlib.sha256(blob.encode()).hexdigest()
    except (TypeError, ValueError):  # keys of mixed types: not cached
        key = None
    cached = _LAYOUTS.get(key) if key else None
    if cached is not None:
        return cached
    prints = {}
    for name in root.services:
        try:
            prints[name] = layout.footprint(_validate_service(root, name, None))
        except SpecError:
            # It fails on its own, but its containers may still write where it says.
            declared = root.services.get(name)
            if isinstance(declared, Mapping):
                merged = deep_merge(root.defaults, declared)
                prints[name] = layout.raw_footprint(name, merged, DEFAULT_CONFIG_ROOT)
    host = _HostLayout(prints, layout.problems_by_service(prints.values(), root.allowed_host_paths))
    if key:
        while len(_LAYOUTS) >= _LAYOUTS_KEPT:
            _LAYOUTS.pop(next(iter(_LAYOUTS)))
        _LAYOUTS[key] = host
    return host


def _validate_service(
    root: PillarRoot,
    name: str,
    overrides: Mapping[str, Any] | None,
    allow_privileged: bool = False,
) -> ServiceSpec:
    """One service on its own: pillar defaults, then the service, then ``overrides``."""
    if name not in root.services and not overrides:
        hint = _did_you_mean(name, list(root.services))
        raise SpecError([f"{PILLAR_KEY}:services:{name}: no such service in pillar{hint}"])
    declared = root.services.get(name) or {}
    if not isinstance(declared, Mapping):
        raise SpecError([f"{PILLAR_KEY}:services:{name}: expected a mapping"])
    merged = deep_merge(root.defaults, declared)
    merged = deep_merge(merged, dict(overrides or {}))
    merged.setdefault("environment", root.environment)
    if root.environment_short is not None:
        merged.setdefault("environment_short", root.environment_short)
    merged["name"] = name
    # Only a valid environment reaches a container (anything else is reported below).
    if merged.get("etcd_env") is True and isinstance(merged["environment"], str):
        if not root.etcd.endpoints:
            raise SpecError(
                [
                    f"{PILLAR_KEY}:services:{name}:etcd_env: needs "
                    f"{PILLAR_KEY}:etcd:endpoints (the store's address the container gets)"
                ]
            )
        env = merged.get("env") if isinstance(merged.get("env"), Mapping) else {}
        merged["env"] = {
            ETCD_ENV_ENDPOINTS: ",".join(root.etcd.endpoints),
            ETCD_ENV_ENVIRONMENT: merged["environment"],
            **dict(env or {}),
        }
    try:
        spec = ServiceSpec.model_validate(
            merged,
            context={
                "allowed_host_paths": root.allowed_host_paths,
                "allow_privileged": allow_privileged,
                "log_root": root.logs.root,
            },
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
    # Its containers write there, and dockerops makes directories there as root.
    if spec.logs is not None and not _under(root.logs.root, root.allowed_host_paths):
        raise SpecError(
            [
                f"{PILLAR_KEY}:logs:root: {root.logs.root} (where services:{name}:logs go) "
                f"is outside {PILLAR_KEY}:allowed_host_paths "
                f"({', '.join(root.allowed_host_paths)})"
            ]
        )
    config_root = spec.config_root
    if config_root and not _under(config_root, root.allowed_host_paths):
        raise SpecError(
            [
                f"{PILLAR_KEY}:services:{name}:config:root: {config_root} is outside "
                f"{PILLAR_KEY}:allowed_host_paths ({', '.join(root.allowed_host_paths)})"
            ]
        )
    return spec


def load_services(pillar: Mapping[str, Any], allow_privileged: bool = False) -> list[ServiceSpec]:
    """Validate every service, reporting the problems of all of them at once."""
    specs, problems = [], []
    for name in service_names(pillar):
        try:
            specs.append(load_service(pillar, name, allow_privileged=allow_privileged))
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
        hidden = (
            (loc and loc[0] in _HIDDEN_VALUES)
            or loc[:2] == ["config", "files"]
            # Any password (dockerops:registries, dockerops:etcd, ...), wherever it is.
            or "password" in loc
            # A repository URL may carry credentials (rest:https://user:pass@...).
            or (
                model is PillarRoot
                and loc[:2] in (["backup", "password"], ["backup", "repository"])
            )
        )
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
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        return f"a {type(value).__name__} too long to show"
    return text if len(text) <= 80 else text[:77] + "..."
