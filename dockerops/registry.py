"""A small client of the Docker Registry HTTP API v2 (the distribution spec).

Just what :mod:`dockerops.configimage` needs to assemble an image in a
registry without a Docker daemon: read a manifest and a blob, upload a blob
(never one the repository already has), put a manifest. Authentication: none,
Basic, or the Bearer token flow (``WWW-Authenticate: Bearer realm=...``), with
the credentials of ``dockerops:registries:<host[:port]>``.

Registries on a loopback address, and those marked ``insecure``, are spoken to
in plain HTTP (as Docker does); every other one over HTTPS with the system's
trust store. A registry is not trusted with anything else: only http and https
URLs are ever opened, and a URL it hands out (a token realm, an upload
``Location``, a redirect) must be https, or plain http only when the registry
itself is plain and the URL is on a loopback address or the registry's own
host. The password is a secret: it is sent only to the registry's own base
URL (scheme, host and port) and to an acceptable token realm, in an
``Authorization`` header that is never forwarded on a redirect, and never
appears in an error. Every answer is read up to a cap (a manifest 4 MiB, a
config blob 8 MiB, a token answer 1 MiB, an error body 64 KiB): a registry
cannot fill this host's memory.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import ipaddress
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any

from .errors import DockerError
from .masking import Masker
from .spec import RegistrySettings

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
LIST_TYPES = (DOCKER_MANIFEST_LIST, OCI_INDEX)

DOCKER_HUB = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
# Docker Hub's other names, as credentials may be keyed under any of them.
DOCKER_HUB_NAMES = (DOCKER_HUB, "index.docker.io", DOCKER_HUB_ENDPOINT)

DEFAULT_TIMEOUT = 60.0
# The most read of a body: a hostile or broken registry cannot fill memory.
MANIFEST_MAX = 4 * 1024 * 1024
CONFIG_BLOB_MAX = 8 * 1024 * 1024
TOKEN_MAX = 1024 * 1024
ERROR_BODY_MAX = 64 * 1024
# What of a registry's error body goes into a message.
BODY_SHOWN = 300
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
# name="quoted \"value\"" or name=token, in a WWW-Authenticate challenge.
_CHALLENGE_PARAM_RE = re.compile(
    r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))'
)


class RegistryError(DockerError):
    """A registry refused or failed a request. The message names the registry
    and the repository, never a password."""


@dataclass(frozen=True)
class Reference:
    """An image reference split the way Docker splits it."""

    registry: str  # host[:port], "docker.io" for Docker Hub
    repository: str  # the path in the registry ("library/nginx" on Docker Hub)
    tag: str | None = None

    @property
    def endpoint(self) -> str:
        """The host[:port] to connect to."""
        return DOCKER_HUB_ENDPOINT if self.registry == DOCKER_HUB else self.registry

    def __str__(self) -> str:
        name = f"{self.registry}/{self.repository}"
        return f"{name}:{self.tag}" if self.tag else name


def parse_reference(ref: str) -> Reference:
    """Split ``ref`` (``[host[:port]/]path[:tag]``) as Docker does: the first
    component is a registry when it has a ``.`` or a ``:`` or is ``localhost``."""
    name, tag = ref, None
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = ref.rpartition(":")
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return Reference(first, rest, tag)
    repository = name if "/" in name else f"library/{name}"
    return Reference(DOCKER_HUB, repository, tag)


def settings_for(
    registry: str, registries: Mapping[str, RegistrySettings]
) -> RegistrySettings | None:
    """The ``dockerops:registries`` entry of ``registry`` (Docker Hub under any of its names)."""
    if registry in registries:
        return registries[registry]
    if registry in DOCKER_HUB_NAMES:
        for name in DOCKER_HUB_NAMES:
            if name in registries:
                return registries[name]
    return None


def is_loopback(registry: str) -> bool:
    """Whether ``registry`` (host[:port]) is this host: localhost, 127.0.0.0/8 or ::1."""
    host = registry
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``WWW-Authenticate: Bearer realm="...",service="..."`` -> ("bearer", params)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for match in _CHALLENGE_PARAM_RE.finditer(rest):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return scheme.lower(), params


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """An image manifest as the registry serves it (its exact bytes: they are hashed)."""

    media_type: str
    digest: str
    raw: bytes

    @property
    def data(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.raw)
        return value

    @property
    def config_digest(self) -> str:
        return str(self.data["config"]["digest"])


@dataclass
class _Response:
    status: int
    headers: Message
    body: bytes
    # Where it was served from, after any redirect.
    url: str


class _RefusedURL(Exception):
    """A URL handed out by the registry (here: a redirect) that is not opened."""


Origin = tuple[str, str, int | None]


def origin(url: str) -> Origin:
    """(scheme, host, port) of ``url``, the port defaulted: what must match
    for a request to go to the same server. ValueError for a bad port."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def _where(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: never its user info, path or query
    (an upload location or a realm may carry a secret of their own)."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port else "")


def _size(limit: int) -> str:
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if limit >= size and limit % size == 0:
            return f"{limit // size} {unit}"
    return f"{limit} bytes"


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Redirects are followed for GET and HEAD only (a blob served from
    storage), and only to a URL the client accepts (``refusal``)."""

    def __init__(self, refusal: Callable[[str], str | None]) -> None:
        self._refusal = refusal

    def http_error_302(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any
    ) -> Any:
        # Checked here, before urllib's own check (which lets ftp: through).
        target = headers.get("location") or headers.get("uri")
        if target and req.get_method() in ("GET", "HEAD"):
            newurl = urllib.parse.urljoin(req.full_url, target)
            why = self._refusal(newurl)
            if why is not None:
                fp.close()
                raise _RefusedURL(f"refusing a redirect to {_where(newurl)}: {why}")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if req.get_method() not in ("GET", "HEAD"):
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class RegistryClient:
    """One repository of one registry, with its credentials.

    ``push``: ask the token service for push access too (a Bearer registry
    grants what the token says, asked for once).
    """

    def __init__(
        self,
        registry: str,
        repository: str,
        settings: RegistrySettings | None = None,
        push: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.registry = registry
        self.repository = repository
        self.settings = settings or RegistrySettings()
        self.push = push
        self.timeout = timeout
        self._plain = is_loopback(registry) or self.settings.insecure
        endpoint = DOCKER_HUB_ENDPOINT if registry in DOCKER_HUB_NAMES else registry
        self.base_url = f"{'http' if self._plain else 'https'}://{endpoint}"
        # Credentials go to this origin only (and to an accepted token realm).
        self._origin = origin(self.base_url)
        self._masker = Masker([self.settings.password] if self.settings.password else [])
        self._authorization: str | None = None
        self._scopes: list[str] = []
        self._opener = _opener(self._refusal)
        # Requests made (method, path): lets a caller see what a call cost.
        self.requests: list[tuple[str, str]] = []

    @classmethod
    def for_reference(
        cls,
        ref: Reference,
        registries: Mapping[str, RegistrySettings],
        push: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> RegistryClient:
        return cls(
            ref.registry, ref.repository, settings_for(ref.registry, registries), push, timeout
        )

    # -- the API ------------------------------------------------------------

    def manifest(self, reference: str) -> Manifest | None:
        """The manifest of a tag or digest; None when the repository has none by that name.

        A manifest list (a multi-platform image) is refused: an image is built
        on one platform's image.
        """
        accept = ", ".join(MANIFEST_TYPES + LIST_TYPES)
        resp = self._request(
            "GET",
            f"/v2/{self.repository}/manifests/{reference}",
            headers={"Accept": accept},
            limit=MANIFEST_MAX,
        )
        if resp.status == 404:
            return None
        self._expect(resp, (200,), f"reading manifest {reference}")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        if not media_type or media_type == "application/json":
            with contextlib.suppress(ValueError, AttributeError):
                media_type = str(json.loads(resp.body).get("mediaType") or media_type)
        if media_type in LIST_TYPES:
            raise self._error(
                f"{reference} is a manifest list (a multi-platform image); a config "
                "image is built on a single-platform image: push the app image for one "
                "platform under its own tag"
            )
        if media_type not in MANIFEST_TYPES:
            raise self._error(
                f"{reference} is a {media_type or 'manifest of unknown type'}; expected a "
                "Docker schema 2 or OCI image manifest"
            )
        digest = sha256_digest(resp.body)
        said = resp.headers.get("Docker-Content-Digest")
        if said and said != digest and not reference.startswith("sha256:"):
            raise self._error(f"manifest {reference}: its digest is {digest}, not {said}")
        if reference.startswith("sha256:") and reference != digest:
            raise self._error(f"manifest {reference}: its content hashes to {digest}")
        return Manifest(media_type, digest, resp.body)

    def manifest_digest(self, reference: str) -> str | None:
        """The digest of a tag's manifest (a HEAD request); None when there is none.

        A registry that does not say it in ``Docker-Content-Digest`` is asked
        for the manifest itself.
        """
        accept = ", ".join(MANIFEST_TYPES + LIST_TYPES)
        resp = self._request(
            "HEAD", f"/v2/{self.repository}/manifests/{reference}", headers={"Accept": accept}
        )
        if resp.status == 404:
            return None
        self._expect(resp, (200,), f"looking up manifest {reference}")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        said = resp.headers.get("Docker-Content-Digest")
        if media_type in MANIFEST_TYPES and said and _DIGEST_RE.fullmatch(said):
            return said
        manifest = self.manifest(reference)
        return manifest.digest if manifest is not None else None

    def blob(self, digest: str, limit: int = CONFIG_BLOB_MAX) -> bytes:
        """A blob's content, checked against its digest; at most ``limit``
        bytes (an image config, by default)."""
        resp = self._request("GET", f"/v2/{self.repository}/blobs/{_checked(digest)}", limit=limit)
        self._expect(resp, (200,), f"reading blob {digest}")
        if sha256_digest(resp.body) != digest:
            raise self._error(f"blob {digest}: the content served does not match its digest")
        return resp.body

    def has_blob(self, digest: str) -> bool:
        """Whether the repository has the blob (a HEAD request)."""
        resp = self._request("HEAD", f"/v2/{self.repository}/blobs/{_checked(digest)}")
        if resp.status == 404:
            return False
        self._expect(resp, (200,), f"looking up blob {digest}")
        return True

    def upload_blob(self, data: bytes, mount_from: str | None = None) -> bool:
        """Put ``data`` in the repository unless it has it; True when it was sent.

        ``mount_from``: another repository of the same registry that may hold
        it (a cross-repository mount costs no upload). Else one monolithic
        upload: POST for a session, PUT of the whole blob with its digest.
        """
        digest = sha256_digest(data)
        if self.has_blob(digest):
            return False
        path = f"/v2/{self.repository}/blobs/uploads/"
        if mount_from:
            query = urllib.parse.urlencode({"mount": digest, "from": mount_from})
            resp = self._request("POST", f"{path}?{query}", data=b"")
            if resp.status == 201:
                return False
        else:
            resp = self._request("POST", path, data=b"")
        self._expect(resp, (202,), f"starting an upload of blob {digest}")
        location = resp.headers.get("Location")
        if not location:
            raise self._error(f"uploading blob {digest}: the registry gave no upload location")
        url = urllib.parse.urljoin(self.base_url + path, location)
        joiner = "&" if urllib.parse.urlsplit(url).query else "?"
        resp = self._request(
            "PUT",
            f"{url}{joiner}{urllib.parse.urlencode({'digest': digest})}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        self._expect(resp, (201,), f"uploading blob {digest}")
        return True

    def put_manifest(self, tag: str, raw: bytes, media_type: str) -> str:
        """Put ``raw`` as ``tag``; return its digest (checked against the registry's)."""
        resp = self._request(
            "PUT",
            f"/v2/{self.repository}/manifests/{tag}",
            data=raw,
            headers={"Content-Type": media_type},
        )
        self._expect(resp, (201, 200), f"pushing manifest {tag}")
        digest = sha256_digest(raw)
        said = resp.headers.get("Docker-Content-Digest")
        if said and said != digest:
            raise self._error(f"pushing manifest {tag}: the registry stored {said}, not {digest}")
        return digest

    # -- transport and authentication ---------------------------------------

    def _refusal(self, url: str) -> str | None:
        """Why ``url`` (one the registry handed out: a token realm, an upload
        location, a redirect) is not opened; None when it may be.

        https anywhere; plain http only when this registry is spoken to in
        plain http itself (loopback or ``insecure``) and the URL stays on a
        loopback address or the registry's own host; nothing else, ever (a
        file: URL would read this host's files).
        """
        try:
            scheme, host, _port = origin(url)
        except ValueError:
            return "its port is not a number"
        if scheme not in ("http", "https"):
            return (
                f"a {scheme or 'relative'} URL; only https (or http to a loopback or "
                "insecure registry) is opened"
            )
        if not host:
            return "it names no host"
        if scheme == "https":
            return None
        if self._plain and (is_loopback(host) or host == self._origin[1]):
            return None
        return (
            "plain http only to a loopback address or to the host of a registry marked "
            f"insecure (dockerops:registries:{self.registry}:insecure)"
        )

    def _request(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        limit: int = ERROR_BODY_MAX,
    ) -> _Response:
        url = path if "://" in path else self.base_url + path
        doing = f"{method} {urllib.parse.urlsplit(url).path}"
        why = self._refusal(url)
        if why is not None:
            raise self._error(f"{doing}: refusing {_where(url)}: {why}")
        self.requests.append((method, urllib.parse.urlsplit(url).path))
        # An upload location may be another server (a storage bucket): the
        # password or token is for the registry alone.
        ours = origin(url) == self._origin
        for attempt in (1, 2):
            req = urllib.request.Request(url, data=data, method=method)
            for name, value in (headers or {}).items():
                req.add_header(name, value)
            if self._authorization and ours:
                # Unredirected: a blob served from elsewhere never sees it.
                req.add_unredirected_header("Authorization", self._authorization)
            resp = self._open(req, doing, limit)
            if (
                resp.status == 401
                and attempt == 1
                and self._served_by_registry(resp)
                and self._authenticate(resp)
            ):
                continue
            return resp
        return resp

    def _served_by_registry(self, resp: _Response) -> bool:
        """Whether ``resp`` came from the registry's base URL (not from where
        a redirect or an upload location led): only its challenges are answered."""
        try:
            return origin(resp.url) == self._origin
        except ValueError:
            return False

    def _open(self, req: urllib.request.Request, doing: str, limit: int) -> _Response:
        try:
            with self._opener.open(req, timeout=self.timeout) as raw:
                status = getattr(raw, "status", None)
                if not isinstance(status, int):
                    # Only HTTP handlers are installed: a guard, and what is
                    # not an HTTP answer is never quoted.
                    raise self._error(f"{doing}: {_where(req.full_url)} gave no HTTP answer")
                return _Response(status, raw.headers, self._read(raw, limit, doing), raw.geturl())
        except urllib.error.HTTPError as err:
            with err:
                body = b""
                if req.get_method() != "HEAD":
                    body = self._read(err, ERROR_BODY_MAX, f"{doing}: HTTP {err.code}")
            return _Response(err.code, err.headers, body, err.geturl())
        except _RefusedURL as err:
            raise self._error(f"{doing}: {err}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", None) or err
            raise self._error(f"{doing}: cannot reach {_where(req.full_url)}: {reason}") from None

    def _read(self, stream: Any, limit: int, doing: str) -> bytes:
        """At most ``limit`` bytes of ``stream``; an error past that."""
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = stream.read(limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise self._error(f"{doing}: the answer is larger than {_size(limit)}")
        return b"".join(chunks)

    def _authenticate(self, resp: _Response) -> bool:
        """Answer a 401's challenge; False when there is nothing more to try."""
        scheme, params = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
        username, password = self.settings.username, self.settings.password
        if scheme == "basic":
            if username is None or password is None:
                raise self._error(
                    "the registry asks for credentials: give them in "
                    f"dockerops:registries:{self.registry} (username, password)"
                )
            if self._authorization is not None:
                return False  # the credentials were sent and refused
            self._authorization = "Basic " + _basic(username, password)
            return True
        if scheme == "bearer" and params.get("realm"):
            # A new token, also when one was sent: it may have expired, or this
            # request needs another scope (a mount's source). One retry per request.
            self._authorization = "Bearer " + self._token(params)
            return True
        return False

    def _token(self, params: Mapping[str, str]) -> str:
        realm = params["realm"]
        why = self._refusal(realm)
        if why is not None:
            # Checked before anything is sent: the realm gets the password.
            raise self._error(f"refusing the token realm {_where(realm)}: {why}")
        actions = "pull,push" if self.push else "pull"
        scopes = [f"repository:{self.repository}:{actions}"]
        # The scopes the registry asked for too (a mount's source repository),
        # kept for the next tokens of this client.
        for scope in (params.get("scope") or "").split():
            if scope not in self._scopes and not scope.startswith(f"repository:{self.repository}:"):
                self._scopes.append(scope)
        scopes += self._scopes
        query: list[tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        query += [("scope", scope) for scope in scopes]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        req = urllib.request.Request(url, method="GET")
        username, password = self.settings.username, self.settings.password
        if username is not None and password is not None:
            req.add_unredirected_header("Authorization", "Basic " + _basic(username, password))
        self.requests.append(("GET", urllib.parse.urlsplit(url).path))
        host = _where(realm)
        resp = self._open(req, f"asking the token service {host}", TOKEN_MAX)
        if resp.status in (401, 403):
            if username is None:
                raise self._error(
                    f"the token service {host} refused anonymous access: give credentials "
                    f"in dockerops:registries:{self.registry} (username, password)"
                )
            raise self._error(f"the token service {host} refused the credentials (user {username})")
        self._expect(resp, (200,), f"asking the token service {host}")
        try:
            answer = json.loads(resp.body)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise self._error(f"the token service {host} gave no token")
        return token

    def _expect(self, resp: _Response, ok: tuple[int, ...], doing: str) -> None:
        if resp.status in ok:
            return
        if resp.status == 401 and not self._served_by_registry(resp):
            raise self._error(f"{doing}: HTTP 401 from {_where(resp.url)}")
        if resp.status == 401:
            who = f"user {self.settings.username}" if self.settings.username else "anonymous"
            raise self._error(f"{doing}: the registry refused the credentials ({who})")
        if resp.status == 403:
            raise self._error(f"{doing}: access denied (HTTP 403){_explain(resp.body)}")
        raise self._error(f"{doing}: HTTP {resp.status}{_explain(resp.body)}")

    def _error(self, message: str) -> RegistryError:
        where = f"registry {self.registry}, {self.repository}"
        return RegistryError(self._masker(f"{where}: {message}"))


def _opener(refusal: Callable[[str], str | None]) -> urllib.request.OpenerDirector:
    """An opener of http and https URLs only (``build_opener`` would add
    file:, ftp: and data:), following redirects that ``refusal`` accepts.

    The environment's http and https proxies are honoured, as before.
    """
    opener = urllib.request.OpenerDirector()
    proxies = {k: v for k, v in urllib.request.getproxies().items() if k in ("http", "https")}
    for handler in (
        urllib.request.ProxyHandler(proxies),
        urllib.request.UnknownHandler(),  # any other scheme: an error, not None
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(context=ssl.create_default_context()),
        _Redirects(refusal),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _basic(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def _checked(digest: str) -> str:
    if not _DIGEST_RE.fullmatch(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return digest


def _explain(body: bytes) -> str:
    """The registry's own words about an error (its JSON ``errors``), briefly."""
    if not body:
        return ""
    try:
        errors = json.loads(body).get("errors") or []
        text = "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}".strip() for e in errors)
    except (ValueError, AttributeError):
        text = body.decode("utf-8", errors="replace").strip()
    text = " ".join(text.split())
    if len(text) > BODY_SHOWN:
        text = text[:BODY_SHOWN] + "..."
    return f": {text}" if text else ""
