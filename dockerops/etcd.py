"""Config from etcd: a small etcd v3 client, and the pure renders of a prefix's keys.

The client speaks etcd's own HTTP/JSON gateway (``/v3/kv/range``,
``/v3/watch``, ``/v3/auth/authenticate``; keys and values base64, numbers as
strings) with the standard library alone: ``http.client``, ``ssl``, ``json``
and ``base64``. The Python clients were weighed and left out:

- python-etcd3 (the gRPC client) is unmaintained: its last release is from
  2020 and it pins old grpcio/protobuf versions that conflict with what Salt
  and other packages install today;
- python-etcd speaks only the v2 API, which etcd 3.4+ disables by default (and
  whose data is not the v3 keyspace at all); Salt's own etcd execution module
  and pillar are built on it, so they cannot read a v3 store either.

The gateway is part of every etcd 3.x server on the client port, so nothing
beyond etcd itself is needed, and the requests here are a handful of JSON POSTs.

What the client guarantees:

- :meth:`EtcdClient.get_prefix` reads every key under a prefix at **one**
  revision (one range request; when etcd pages the answer, the further pages
  are read at that same revision), so a rendered file never mixes two states
  of the store; :meth:`EtcdClient.get_prefixes` reads several prefixes at one
  revision (the first's), so neither does a config version made of several;
- what is read is bounded: at most :data:`MAX_KEYS` keys and
  :data:`MAX_PREFIX_BYTES` of keys and values per prefix, and each answer (or
  line of the watch stream) at most 64 MiB;
- :meth:`EtcdClient.watch` asks etcd's watch for the changes after a revision
  (it does not read the keys again), bounded in time;
- endpoints are tried in order, the next one when one cannot be reached;
  TLS (``ca_file``, ``cert_file``/``key_file``) and user/password
  authentication (a token, fetched again once when etcd says it expired);
- every failure is an :class:`EtcdError` with a ``kind`` and a message naming
  the endpoints, never the password;
- for a caller on a clock (the beacon, on the minion's main loop), an overall
  ``deadline`` and a shorter ``connect_timeout`` bound every request.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import json
import re
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from .errors import SpecError, StoreError
from .spec import PILLAR_KEY, EtcdSettings

# EtcdError.kind: what went wrong, for callers that act on it.
UNREACHABLE = "unreachable"  # no endpoint could be reached (refused, TLS, no leader)
AUTH = "auth"  # wrong user or password, or the user may not read the keys
TIMEOUT = "timeout"  # every endpoint that was tried timed out
BAD_ANSWER = "bad_answer"  # etcd answered something this client cannot use
BAD_VALUE = "bad_value"  # a key or value is not UTF-8 text, or a prefix holds too much
COMPACTED = "compacted"  # the revision a read was pinned to is compacted away
KINDS = (UNREACHABLE, AUTH, TIMEOUT, BAD_ANSWER, BAD_VALUE, COMPACTED)

# Keys read per range request; further pages are read at the first page's revision.
PAGE_SIZE = 1000
# A config file is rendered from at most this many keys (a prefix like "/"
# would otherwise read the whole store into memory).
MAX_KEYS = 10000
# ... and from at most this many bytes of keys and values (the pages of a
# prefix are each capped by _MAX_LINE, but not their sum).
MAX_PREFIX_BYTES = 16 * 1024 * 1024
# One answer, or one line of the watch stream (one response, possibly a batch of events).
_MAX_LINE = 64 * 1024 * 1024
# A range read at one revision is started again when etcd compacts that
# revision between two pages; this many tries in all.
_READ_TRIES = 3

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

T = TypeVar("T")


class EtcdError(StoreError):
    """etcd could not be read (``kind``: one of :data:`KINDS`)."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True)
class Snapshot:
    """The keys under a prefix (relative to it) and their values, at ``revision``."""

    revision: int
    values: dict[str, str]


@dataclass(frozen=True)
class WatchResult:
    """What changed under the watched prefixes after ``start_revision``, up to
    and including ``revision`` (the store's revision when the watch began).

    ``changed``: the prefixes with at least one put or delete in that window;
    ``keys``: per changed prefix, the full keys that changed, sorted.
    ``compacted``: the changes since ``start_revision`` are no longer known (etcd
    compacted that history away, or the store is behind it: restored or
    replaced); every prefix is then in ``changed``, with no keys.
    """

    revision: int
    changed: frozenset[str]
    keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    compacted: bool = False


def prefix_range_end(prefix: bytes) -> bytes:
    """The end of the key range holding every key that starts with ``prefix``:
    its last byte below 0xff plus one (etcd's own ``GetPrefixRangeEnd``)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise EtcdError(BAD_ANSWER, f"etcd answered a {what} that is not base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EtcdError(BAD_ANSWER, f"etcd answered a {what} that is not base64") from None


def _int(value: Any, what: str) -> int:
    """An int64 of the gateway's JSON (a string, or absent for 0)."""
    if value is None:
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise EtcdError(BAD_ANSWER, f"etcd answered a {what} that is not a number") from None


def show_key(key: bytes) -> str:
    """A key for messages and events: its text, or escaped bytes if not UTF-8."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return key.decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class _Endpoint:
    url: str
    https: bool
    host: str
    port: int


class _Failed(Exception):
    """One endpoint could not be used (the next one is tried)."""

    def __init__(self, reason: str, timed_out: bool = False) -> None:
        self.reason = reason
        self.timed_out = timed_out
        super().__init__(reason)


class _AuthExpired(Exception):
    """etcd no longer knows the token: authenticate again, once."""


class EtcdClient:
    """An etcd v3 client over the HTTP/JSON gateway, for ``dockerops:etcd``'s settings.

    Endpoints are tried in order, starting with the last one that answered;
    one that cannot be reached (refused, timed out, TLS failure, no leader)
    passes the request on to the next. Each request is bounded by the
    settings' ``timeout``; connecting (TCP and TLS) by ``connect_timeout``
    when given (so one black-holed endpoint does not use up the time of the
    next). ``deadline`` (a :func:`time.monotonic` time): no request goes past
    it (each is cut short, endpoints not tried yet are skipped), and the
    failure is an EtcdError (``timeout``).

    ``cluster_id``/``member_id``: the header of etcd's last answer ("" before
    one), to tell a store from another one at the same endpoints.
    """

    def __init__(
        self,
        settings: EtcdSettings,
        connect_timeout: float | None = None,
        deadline: float | None = None,
    ) -> None:
        if not settings.endpoints:
            raise SpecError([f"{PILLAR_KEY}:etcd:endpoints: needed to read config from etcd"])
        self._settings = settings
        self._endpoints = [_parse_endpoint(url) for url in settings.endpoints]
        self._ssl = _ssl_context(settings) if any(e.https for e in self._endpoints) else None
        self._token: str | None = None
        self._first = 0  # the endpoint that answered last
        self._connect_timeout = connect_timeout
        self._deadline = deadline
        self.cluster_id = ""
        self.member_id = ""

    @property
    def endpoints(self) -> list[str]:
        return [e.url for e in self._endpoints]

    # -- reads ---------------------------------------------------------------

    def get_prefix(self, prefix: str, revision: int | None = None) -> Snapshot:
        """Every key under ``prefix`` (relative to it) with its value, read at
        one revision: ``revision`` when given, else the store's current one.
        A key or value that is not UTF-8, more than :data:`MAX_KEYS` keys or
        :data:`MAX_PREFIX_BYTES` of keys and values is an EtcdError
        (``bad_value``) naming the key, never the value; a ``revision``
        etcd compacted away is one of kind ``compacted``."""
        raw = prefix.encode("utf-8")
        end = prefix_range_end(raw)
        for _ in range(1 if revision else _READ_TRIES):
            try:
                read_at, pairs = self._read_range(raw, end, revision or 0)
            except _Compacted:
                if revision:
                    raise EtcdError(
                        COMPACTED,
                        f"etcd at {self._where()}: the keys under {prefix} cannot be read "
                        f"at revision {revision}: it is compacted",
                    ) from None
                continue  # compacted between two pages: read again, at a newer revision
            return Snapshot(read_at, _decode_pairs(prefix, raw, pairs))
        raise EtcdError(
            BAD_ANSWER,
            f"etcd at {self._where()}: the keys under {prefix} changed and were "
            f"compacted while being read, {_READ_TRIES} times",
        )

    def get_prefixes(self, prefixes: Iterable[str]) -> dict[str, Snapshot]:
        """Each of ``prefixes`` (once, however often it is given) read at one
        revision: the first one's, the store's current revision then. When
        etcd compacts that revision before the last prefix is read, every
        prefix is read again from scratch, once; then EtcdError (``compacted``)."""
        wanted = sorted(set(prefixes))
        for attempt in range(2):
            snapshots: dict[str, Snapshot] = {}
            revision: int | None = None
            try:
                for prefix in wanted:
                    snapshots[prefix] = self.get_prefix(prefix, revision)
                    revision = snapshots[prefix].revision
            except EtcdError as err:
                if err.kind != COMPACTED:
                    raise
                if attempt:
                    raise EtcdError(
                        COMPACTED, f"{err} (again, after reading every prefix afresh)"
                    ) from None
                continue
            return snapshots
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_range(
        self, key: bytes, end: bytes, revision: int = 0
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        """The pairs under ``key``..``end`` and the revision they were read at:
        ``revision``, or (0) the first page's; _Compacted when that revision
        is compacted (a pinned one, or the first page's before a further page)."""
        body: dict[str, Any] = {"key": _b64(key), "range_end": _b64(end), "limit": PAGE_SIZE}
        if revision:
            body["revision"] = str(revision)
        pairs: list[tuple[bytes, bytes]] = []
        size = 0
        while True:
            try:
                answer = self._call("/v3/kv/range", body)
            except EtcdError as err:
                if revision and "compacted" in str(err):
                    raise _Compacted() from None
                raise
            header_revision = _int((answer.get("header") or {}).get("revision"), "revision")
            revision = revision or header_revision
            kvs = answer.get("kvs") or []
            if not isinstance(kvs, list):
                raise EtcdError(BAD_ANSWER, f"etcd at {self._where()} answered a range without kvs")
            for kv in kvs:
                if not isinstance(kv, dict):
                    raise EtcdError(BAD_ANSWER, f"etcd at {self._where()} answered a bad kv")
                pairs.append((_unb64(kv.get("key"), "key"), _unb64(kv.get("value", ""), "value")))
                size += len(pairs[-1][0]) + len(pairs[-1][1])
            if size > MAX_PREFIX_BYTES:
                raise EtcdError(
                    BAD_VALUE,
                    f"the keys under {show_key(key)} hold more than {MAX_PREFIX_BYTES} bytes "
                    "of keys and values: too large for a config file",
                )
            if len(pairs) > MAX_KEYS:
                raise EtcdError(
                    BAD_VALUE,
                    f"more than {MAX_KEYS} keys under {show_key(key)}: too many for a config file",
                )
            if not answer.get("more"):
                return revision, pairs
            if not kvs:
                raise EtcdError(
                    BAD_ANSWER, f"etcd at {self._where()} said more keys follow, but sent none"
                )
            # The next page: after the last key, at the first page's revision.
            body = {**body, "key": _b64(pairs[-1][0] + b"\0"), "revision": str(revision)}

    def current_revision(self, prefix: str | None = None) -> int:
        """The store's revision now: read under ``prefix`` when given (a
        linearizable read needing only read access to it), else from the
        member's status."""
        if prefix is None:
            answer = self._call("/v3/maintenance/status", {})
        else:
            raw = prefix.encode("utf-8")
            answer = self._call(
                "/v3/kv/range",
                {"key": _b64(raw), "range_end": _b64(prefix_range_end(raw)), "count_only": True},
            )
        revision = _int((answer.get("header") or {}).get("revision"), "revision")
        if revision <= 0:
            raise EtcdError(BAD_ANSWER, f"etcd at {self._where()} answered no revision")
        return revision

    def watch(
        self, prefixes: Iterable[str], start_revision: int, wait_seconds: float
    ) -> WatchResult:
        """Which ``prefixes`` changed after ``start_revision - 1`` (from
        ``start_revision`` on), up to the store's revision when the watch began.

        One watch stream carries a watcher per prefix, from ``start_revision``.
        etcd sends past changes within about 100 ms (its catch-up loop), so
        the stream is read for ``wait_seconds`` (less when every watcher is
        known to be caught up). Changes made after the watch began are left to
        the next watch, from the returned ``revision + 1``.
        """
        wanted = sorted(set(prefixes))
        if not wanted:
            return WatchResult(self.current_revision(), frozenset())
        if start_revision < 1:
            raise ValueError("start_revision is at least 1")
        return self._with_token(lambda: self._watch_once(wanted, start_revision, wait_seconds))

    # -- transport -----------------------------------------------------------

    def _where(self) -> str:
        return ", ".join(self.endpoints)

    def _order(self) -> list[_Endpoint]:
        return self._endpoints[self._first :] + self._endpoints[: self._first]

    def _scrub(self, text: str) -> str:
        password = self._settings.password
        if password:
            text = text.replace(password, "***")
        return text

    def _with_token(self, action: Callable[[], T]) -> T:
        """Run ``action`` with a token when a user is set; authenticate again
        and run it once more when etcd says the token expired."""
        for attempt in range(2):
            if self._settings.username is not None and self._token is None:
                self._authenticate()
            try:
                return action()
            except _AuthExpired:
                self._token = None
                if attempt or self._settings.username is None:
                    raise EtcdError(
                        AUTH,
                        f"etcd at {self._where()} refused the token"
                        + (" again after authenticating" if attempt else " (no user is set)"),
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _authenticate(self) -> None:
        body = {"name": self._settings.username, "password": self._settings.password}
        answer = self._post_any("/v3/auth/authenticate", body, token=False)
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise EtcdError(
                AUTH,
                f"etcd at {self._where()} gave no token for user {self._settings.username} "
                "(is authentication enabled?)",
            )
        self._token = token

    def _call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` on the first endpoint that answers, with the token."""
        return self._with_token(lambda: self._post_any(path, body, token=True))

    def _post_any(self, path: str, body: Mapping[str, Any], token: bool) -> dict[str, Any]:
        failures: list[tuple[str, _Failed]] = []
        for endpoint in self._order():
            try:
                answer = self._post(endpoint, path, body, token)
            except _Failed as err:
                failures.append((endpoint.url, err))
                continue
            self._first = self._endpoints.index(endpoint)
            return answer
        raise self._unreachable(failures)

    def _unreachable(self, failures: list[tuple[str, _Failed]]) -> EtcdError:
        kind = TIMEOUT if failures and all(f.timed_out for _, f in failures) else UNREACHABLE
        detail = "; ".join(f"{url}: {f.reason}" for url, f in failures)
        return EtcdError(kind, self._scrub(f"etcd unreachable ({detail})"))

    def _left(self, timeout: float | None = None) -> float:
        """``timeout`` (default: the settings'), cut to what is left before the
        deadline; _Failed (timed out) when nothing is."""
        wanted = self._settings.timeout if timeout is None else timeout
        if self._deadline is None:
            return wanted
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise _Failed("not tried: out of time", timed_out=True)
        return min(wanted, left)

    def _bounded(self, deadline: float) -> float:
        return deadline if self._deadline is None else min(deadline, self._deadline)

    def _open(self, endpoint: _Endpoint) -> http.client.HTTPConnection:
        """A connection to ``endpoint``, connected (TCP, and TLS for https)
        within the connect timeout; its socket then bounded by the request's.
        Call inside _connection_errors()."""
        connect = self._left(self._connect_timeout)
        if endpoint.https:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                endpoint.host, endpoint.port, timeout=connect, context=self._ssl
            )
        else:
            conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=connect)
        try:
            conn.connect()
            timeout = self._left()
        except BaseException:
            conn.close()
            raise
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _note(self, header: Any) -> None:
        """Which cluster and member answered (the header of any answer)."""
        if isinstance(header, dict):
            self.cluster_id = str(header.get("cluster_id") or self.cluster_id)
            self.member_id = str(header.get("member_id") or self.member_id)

    def _headers(self, token: bool) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if token and self._token:
            headers["Authorization"] = self._token
        return headers

    def _post(
        self, endpoint: _Endpoint, path: str, body: Mapping[str, Any], token: bool
    ) -> dict[str, Any]:
        """One request to one endpoint: its JSON answer, _Failed to try the
        next endpoint, _AuthExpired, or an EtcdError that ends the request."""
        with _connection_errors():
            conn = self._open(endpoint)
        try:
            with _connection_errors():
                conn.request("POST", path, body=json.dumps(body), headers=self._headers(token))
                response = conn.getresponse()
                data = response.read(_MAX_LINE + 1)
            return self._answer(endpoint, path, response.status, data)
        finally:
            conn.close()

    def _answer(self, endpoint: _Endpoint, path: str, status: int, data: bytes) -> dict[str, Any]:
        if len(data) > _MAX_LINE:
            # Cut at the cap: not etcd's fault, nor a sign of another server.
            raise EtcdError(
                BAD_ANSWER,
                f"etcd at {endpoint.url} answered {path} with an answer larger than "
                f"{_MAX_LINE} bytes",
            )
        try:
            answer = json.loads(data)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            if status >= 500:
                raise _Failed(f"HTTP {status}")
            raise EtcdError(
                BAD_ANSWER,
                f"etcd at {endpoint.url} answered {path} with HTTP {status} and no JSON "
                "(is this etcd's client port?)",
            )
        if status == 200 and "error" not in answer:
            self._note(answer.get("header"))
            return answer
        self._raise_for_error(endpoint, path, status, answer)
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_for_error(
        self, endpoint: _Endpoint, path: str, status: int, answer: Mapping[str, Any]
    ) -> None:
        message = str(answer.get("message") or answer.get("error") or f"HTTP {status}")
        message = self._scrub(message)
        code = answer.get("code")
        if "invalid auth token" in message:
            raise _AuthExpired()
        if (
            "authentication failed" in message
            or "permission denied" in message
            or "user name is empty" in message
            or "user name not found" in message
            or code in (7, 16)
        ):
            user = self._settings.username
            who = f" for user {user}" if user else " (no user is set)"
            raise EtcdError(AUTH, f"etcd at {endpoint.url} refused {path}{who}: {message}")
        if code == 14 or status == 503:  # Unavailable: no leader, stopping, request timed out
            raise _Failed(message, timed_out="timed out" in message)
        raise EtcdError(BAD_ANSWER, f"etcd at {endpoint.url} answered {path}: {message}")

    # -- watch ---------------------------------------------------------------

    def _watch_once(self, prefixes: list[str], start: int, wait_seconds: float) -> WatchResult:
        failures: list[tuple[str, _Failed]] = []
        for endpoint in self._order():
            try:
                result = self._watch_on(endpoint, prefixes, start, wait_seconds)
            except _Failed as err:
                failures.append((endpoint.url, err))
                continue
            self._first = self._endpoints.index(endpoint)
            return result
        raise self._unreachable(failures)

    def _watch_on(
        self, endpoint: _Endpoint, prefixes: list[str], start: int, wait_seconds: float
    ) -> WatchResult:
        # One stream, one watcher per prefix: the create requests are sent as
        # the request body, which the gateway reads one JSON object at a time.
        ids = {index + 1: prefix for index, prefix in enumerate(prefixes)}
        body = "".join(
            json.dumps(
                {
                    "create_request": {
                        "key": _b64(prefix.encode()),
                        "range_end": _b64(prefix_range_end(prefix.encode())),
                        "start_revision": str(start),
                        "watch_id": str(watch_id),
                    }
                }
            )
            for watch_id, prefix in ids.items()
        )
        with _connection_errors():
            conn = self._open(endpoint)
        try:
            with _connection_errors():
                conn.request("POST", "/v3/watch", body=body, headers=self._headers(True))
                response = conn.getresponse()
                if response.status != 200:
                    self._answer(
                        endpoint, "/v3/watch", response.status, response.read(_MAX_LINE + 1)
                    )
                stream = _WatchStream(ids, start)
                lines = _LineReader(conn, response, endpoint.url)
                # Every watcher's "created" answer first: it says the revision
                # the watch began at. Bounded by the request timeout.
                deadline = self._bounded(time.monotonic() + self._settings.timeout)
                while not stream.all_created():
                    stream.take(self._watch_line(endpoint, lines.next(deadline)))
                # Then past changes, for at most wait_seconds.
                waited = time.monotonic() + wait_seconds
                deadline = self._bounded(waited)
                while not stream.caught_up():
                    try:
                        line = lines.next(deadline)
                    except _Failed as err:
                        if err.timed_out and deadline == waited:
                            break  # waited enough
                        raise  # the caller's deadline came first: not known to be complete
                    stream.take(self._watch_line(endpoint, line))
                result = stream.result()
        finally:
            conn.close()
        # A watcher still catching up when the wait ran out may hold changes not
        # received yet (etcd sends nothing for one that had none): ask the
        # keyspace whether its prefix changed in the window.
        behind = [ids[w] for w in stream.behind() if ids[w] not in result.changed]
        found = [p for p in behind if self._changed_between(p, start - 1, result.revision)]
        if not found:
            return result
        return WatchResult(
            result.revision, result.changed | frozenset(found), result.keys, result.compacted
        )

    def _changed_between(self, prefix: str, after: int, upto: int) -> bool:
        """Whether a key under ``prefix`` was put or deleted after revision
        ``after``, up to ``upto``: a key modified in the window, or another
        count of keys (a delete) at its two ends. A compacted ``after``: True."""
        raw = prefix.encode("utf-8")
        window = {"key": _b64(raw), "range_end": _b64(prefix_range_end(raw))}

        def count(revision: int) -> int:
            answer = self._call(
                "/v3/kv/range", {**window, "count_only": True, "revision": str(revision)}
            )
            return _int(answer.get("count", 0), "count")

        try:
            # etcd filters by min_mod_revision only the keys it returns (a
            # count ignores it): ask for the keys, without their values.
            modified = self._call(
                "/v3/kv/range",
                {
                    **window,
                    "keys_only": True,
                    "revision": str(upto),
                    "min_mod_revision": str(after + 1),
                },
            )
            if modified.get("kvs"):
                return True
            return (count(after) if after >= 1 else 0) != count(upto)
        except EtcdError as err:
            if "compacted" in str(err):
                return True
            raise

    def _watch_line(self, endpoint: _Endpoint, raw: bytes) -> dict[str, Any]:
        """One response of the watch stream; EtcdError for an error or a refusal."""
        try:
            message = json.loads(raw)
        except ValueError:
            raise EtcdError(
                BAD_ANSWER, f"etcd at {endpoint.url} sent a watch answer that is not JSON"
            ) from None
        if not isinstance(message, dict):
            raise EtcdError(BAD_ANSWER, f"etcd at {endpoint.url} sent a bad watch answer")
        if "error" in message:
            error = message["error"]
            self._raise_for_error(
                endpoint, "/v3/watch", 200, error if isinstance(error, dict) else {"message": error}
            )
        result = message.get("result")
        if not isinstance(result, dict):
            raise EtcdError(
                BAD_ANSWER, f"etcd at {endpoint.url} sent a watch answer without result"
            )
        self._note(result.get("header"))
        reason = str(result.get("cancel_reason") or "")
        if result.get("canceled") and reason and not _int(result.get("compact_revision"), "rev"):
            self._raise_for_error(endpoint, "/v3/watch", 200, {"message": reason})
        return result


class _Compacted(Exception):
    """The revision a paged read is pinned to was compacted."""


class _WatchStream:
    """What the responses of one watch stream say so far (pure).

    The watch "began" at the oldest revision its watchers were created at;
    a change after that is left to the next watch. Until every watcher is
    created that revision is not known, so changes and answers are kept and
    judged against it later.
    """

    def __init__(self, ids: Mapping[int, str], start: int) -> None:
        self.ids = dict(ids)
        self.start = start
        self.created: dict[int, int] = {}  # watch id -> the store's revision then
        self.answered: dict[int, int] = {}  # watch id -> the newest revision it answered at
        self.changes: list[tuple[int, int, str]] = []  # (watch id, revision, key)
        self.compacted = False

    def all_created(self) -> bool:
        return len(self.created) == len(self.ids)

    def began(self) -> int:
        return min(self.created.values())

    def caught_up(self) -> bool:
        """Every watcher is known to have sent its changes up to when the watch began."""
        if self.compacted:
            return True
        return not self.behind()

    def behind(self) -> list[int]:
        """The watchers not known to have sent their changes up to when the watch began."""
        if self.compacted:
            return []
        began = self.began()
        return [
            watch_id
            for watch_id in self.ids
            # Created with nothing to catch up on: etcd puts such a watcher
            # straight among the synced ones (it sends every change from now).
            if not (
                self.start > self.created[watch_id]
                # etcd sends a watcher's changes in order, each answer up to its
                # header's revision (a catch-up of over 1000 revisions comes in
                # batches: the keys of later batches may be missing, but a
                # prefix with any change is reported changed all the same).
                or self.answered.get(watch_id, 0) >= began
            )
        ]

    def take(self, result: Mapping[str, Any]) -> None:
        watch_id = _int(result.get("watch_id"), "watch id")
        if watch_id not in self.ids:
            raise EtcdError(BAD_ANSWER, f"etcd sent an answer for an unknown watcher {watch_id}")
        revision = _int((result.get("header") or {}).get("revision"), "revision")
        if result.get("created"):
            self.created[watch_id] = revision
        if _int(result.get("compact_revision"), "compact revision"):
            self.compacted = True
            return
        events = result.get("events") or []
        for event in events:
            kv = event.get("kv") if isinstance(event, dict) else None
            if not isinstance(kv, dict):
                raise EtcdError(BAD_ANSWER, "etcd sent a watch event without a key")
            key = show_key(_unb64(kv.get("key"), "key"))
            self.changes.append((watch_id, _int(kv.get("mod_revision"), "revision"), key))
        if events or not result.get("created"):
            self.answered[watch_id] = max(self.answered.get(watch_id, 0), revision)

    def result(self) -> WatchResult:
        began = self.began()
        if self.compacted or began < self.start - 1:
            # The history since start is gone, or the store is behind it.
            return WatchResult(began, frozenset(self.ids.values()), {}, compacted=True)
        found: dict[str, set[str]] = {}
        for watch_id, revision, key in self.changes:
            if revision <= began:  # later ones: the next watch reports them
                found.setdefault(self.ids[watch_id], set()).add(key)
        keys = {prefix: tuple(sorted(names)) for prefix, names in sorted(found.items())}
        return WatchResult(began, frozenset(keys), keys)


class _LineReader:
    """The watch stream's lines (one JSON response each), each read by a deadline."""

    def __init__(
        self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, url: str
    ):
        self.conn = conn
        self.response = response
        self.url = url

    def next(self, deadline: float) -> bytes:
        """The next non-empty line; _Failed (timed out) when ``deadline`` passes first."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Failed("timed out", timed_out=True)
            if self.conn.sock is not None:
                self.conn.sock.settimeout(left)
            with _connection_errors():
                line = self.response.readline(_MAX_LINE)
            if not line:
                raise _Failed("the watch stream ended")
            if len(line) >= _MAX_LINE and not line.endswith(b"\n"):
                # Cut at the cap (a catch-up batch of big values): not JSON, and
                # the rest of it would be read as the next line.
                raise EtcdError(
                    BAD_ANSWER,
                    f"etcd at {self.url} sent a watch answer larger than {_MAX_LINE} bytes",
                )
            if line.strip():
                return line


@contextlib.contextmanager
def _connection_errors() -> Iterator[None]:
    """Socket, TLS and HTTP failures become _Failed (try the next endpoint)."""
    try:
        yield
    except TimeoutError:
        raise _Failed("timed out", timed_out=True) from None
    except ssl.SSLError as err:
        raise _Failed(f"TLS: {err.reason or err}") from None
    except ConnectionRefusedError:
        raise _Failed("connection refused") from None
    except (OSError, http.client.HTTPException) as err:
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise _Failed(reason) from None


def _parse_endpoint(url: str) -> _Endpoint:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    try:
        port = parts.port or 2379  # etcd's client port
    except ValueError:
        raise SpecError([f"{PILLAR_KEY}:etcd:endpoints: {url}: a bad port"]) from None
    return _Endpoint(url, https, parts.hostname or "", port)


def _ssl_context(settings: EtcdSettings) -> ssl.SSLContext:
    where = f"{PILLAR_KEY}:etcd"
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as err:
        raise SpecError([f"{where}:ca_file: {settings.ca_file}: {_reason(err)}"]) from None
    if settings.cert_file and settings.key_file:
        try:
            context.load_cert_chain(settings.cert_file, settings.key_file)
        except (OSError, ssl.SSLError) as err:
            raise SpecError(
                [f"{where}:cert_file/key_file: {settings.cert_file}: {_reason(err)}"]
            ) from None
    return context


def _reason(err: BaseException) -> str:
    return str(getattr(err, "strerror", None) or getattr(err, "reason", None) or err)


def _decode_pairs(prefix: str, raw: bytes, pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in pairs:
        if not key.startswith(raw):
            raise EtcdError(BAD_ANSWER, f"etcd answered key {show_key(key)}, not under {prefix}")
        try:
            name = key[len(raw) :].decode("utf-8")
        except UnicodeDecodeError:
            raise EtcdError(
                BAD_VALUE, f"etcd key {show_key(key)} is not UTF-8 text; keys name config entries"
            ) from None
        try:
            values[name] = value.decode("utf-8")
        except UnicodeDecodeError as err:
            raise EtcdError(
                BAD_VALUE,
                f"etcd key {show_key(key)}: its value is not UTF-8 text (byte {err.start}); "
                "config files are rendered as text",
            ) from None
    return values


# -- renders (pure) ------------------------------------------------------------


def check_required(values: Mapping[str, str], required: Iterable[str], where: str) -> None:
    """SpecError listing every key of ``required`` missing from ``values``
    (keys relative to the prefix); ``where``: the file's pillar path."""
    missing = [key for key in required if key not in values]
    if missing:
        raise SpecError(
            [f"{where}:required: {key} is not in etcd (under the prefix)" for key in missing]
        )


def render_values(fmt: str, values: Mapping[str, str], where: str) -> str:
    """The keys under a prefix as a file: ``json``/``yaml`` (keys holding ``/``
    become nested objects: ``db/host`` is ``{"db": {"host": ...}}``; every
    value a string) or ``env`` (``KEY=value`` lines). Sorted, deterministic,
    ending in a newline. SpecError naming each bad key (never a value)."""
    if fmt == "env":
        return _render_env(values, where)
    if fmt not in ("json", "yaml"):
        raise ValueError(f"render_values: format {fmt!r} is json, yaml or env")
    tree = nest(values, where)
    if fmt == "json":
        return json.dumps(tree, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    text: str = yaml.safe_dump(
        tree, default_flow_style=False, sort_keys=True, allow_unicode=True, width=1 << 30
    )
    return text


def nest(values: Mapping[str, str], where: str) -> dict[str, Any]:
    """``values`` with each key split on ``/`` into nested objects; SpecError
    for a key with an empty part, or that is both a value and a parent."""
    tree: dict[str, Any] = {}
    problems: list[str] = []
    conflicts: set[str] = set()
    for key in sorted(values):
        parts = key.split("/")
        if any(not part for part in parts):
            problems.append(
                f"{where}: etcd key {key!r} has an empty part (between '/'s, or at an end); "
                "its prefix should end with '/'"
            )
            continue
        node = tree
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                parent = "/".join(parts[: depth + 1])
                if parent not in conflicts:  # once, naming its first child
                    conflicts.add(parent)
                    problems.append(
                        f"{where}: etcd key {parent} is both a value and the parent of {key}"
                    )
                break
            node = child
        else:
            # Sorted, a value comes before its children ("db" < "db/host"), so
            # the conflict is always found above, when the child is placed.
            node[parts[-1]] = values[key]
    if problems:
        raise SpecError(problems)
    return tree


def _render_env(values: Mapping[str, str], where: str) -> str:
    problems: list[str] = []
    lines: list[str] = []
    for key in sorted(values):
        value = values[key]
        if not _ENV_NAME_RE.fullmatch(key):
            problems.append(
                f"{where}: etcd key {key!r} is not an environment variable name "
                "(letters, digits and '_', not starting with a digit)"
            )
        elif any(c in value for c in "\n\r\0"):
            problems.append(
                f"{where}: etcd key {key}: its value holds a line break or NUL, "
                "which an env file cannot hold"
            )
        else:
            lines.append(f"{key}={value}\n")
    if problems:
        raise SpecError(problems)
    return "".join(lines)
