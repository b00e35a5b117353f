"""The Docker client, and the one place that translates docker-py errors.

``docker_client(opts, context)`` caches one client per daemon URL in Salt's
``__context__`` (any dict works), so a call talks to the daemon over one
connection pool; ``close_clients(context)`` closes them when the call ends
(a minion running jobs as threads keeps no idle connections to the daemon).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, MutableMapping
from typing import Any

import docker
import docker.errors
import requests.exceptions

from .errors import DockerError, DockerUnavailable, NotFound

DEFAULT_URL = "unix:///var/run/docker.sock"
DEFAULT_TIMEOUT = 60
CONTEXT_KEY = "dockerops.clients"
# What a call read from the daemon and may read again (see dockerops.host):
# dropped by any write made through a client of the same context.
READS_KEY = "dockerops.reads"

# The API version negotiated with each daemon URL, for the process's life: a
# client built with version="auto" asks the daemon (GET /version) first, and a
# client is built per call. Forgotten when a daemon says it is too new for it.
_api_versions: dict[str, str] = {}


def docker_url(opts: MutableMapping[str, Any]) -> str:
    """The daemon this minion manages: minion option ``dockerops.docker_url``."""
    return str(opts.get("dockerops.docker_url") or DEFAULT_URL)


def docker_client(
    opts: MutableMapping[str, Any], context: MutableMapping[str, Any]
) -> docker.DockerClient:
    """Return a client for the minion's Docker daemon, cached in ``context``.

    The caller closes it with :func:`close_clients` when its call ends.
    """
    url = docker_url(opts)
    timeout = int(opts.get("dockerops.docker_timeout") or DEFAULT_TIMEOUT)
    cache: dict[str, docker.DockerClient] = context.setdefault(CONTEXT_KEY, {})
    client = cache.get(url)
    if client is None:
        known = _api_versions.get(url)
        with translate_errors(f"connecting to the Docker daemon at {url}"):
            client = docker.DockerClient(base_url=url, timeout=timeout, version=known or "auto")
        if known is None:
            _api_versions[url] = str(client.api.api_version)
        _forget_reads_on_write(client, context)
        cache[url] = client
    return client


def close_clients(context: MutableMapping[str, Any]) -> None:
    """Close the clients cached in ``context``: their pooled connections to the daemon.

    The faces call it when a call (a module function, a state) ends; the next
    call builds a new client, which costs no request.
    """
    cache = context.pop(CONTEXT_KEY, None) or {}
    for client in cache.values():
        with contextlib.suppress(Exception):
            client.close()


def kept_reads(context: MutableMapping[str, Any]) -> dict[str, Any]:
    """What ``context``'s calls read from the daemon and may read again (the
    host's container list, image inspects: :mod:`dockerops.host`).

    A plain dict kept in ``context`` and emptied, never replaced: a client's
    write hook holds it, and may run in a thread where Salt's ``__context__``
    cannot be reached (the stops of ``remove_all``).
    """
    reads: dict[str, Any] = context.setdefault(READS_KEY, {})
    return reads


def forget_reads(context: MutableMapping[str, Any]) -> None:
    """Drop what ``context``'s calls read from the daemon: the next read asks again."""
    kept_reads(context).clear()


def _forget_reads_on_write(client: docker.DockerClient, context: MutableMapping[str, Any]) -> None:
    """Make every write through ``client`` drop ``context``'s reads.

    docker-py sends every request through ``requests.Session.request``: any
    method but GET and HEAD changes something (create, start, stop, remove,
    kill, pull, exec...), so nothing read before it is served after it. Both
    before the request (a read in another thread meanwhile would see the old
    state) and after it (one taken while it ran may predate its effect).
    """
    api = client.api
    request = api.request
    reads = kept_reads(context)

    def request_forgetting(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if str(method).upper() in ("GET", "HEAD"):
            return request(method, url, *args, **kwargs)
        reads.clear()
        try:
            return request(method, url, *args, **kwargs)
        finally:
            reads.clear()

    api.request = request_forgetting


@contextlib.contextmanager
def translate_errors(doing: str) -> Iterator[None]:
    """Turn docker-py and transport errors into :mod:`dockerops.errors`.

    ``doing`` says what was being done ("creating web-1"), so every error names
    the service and replica it is about.
    """
    try:
        yield
    except docker.errors.NotFound as err:
        raise NotFound(f"{doing}: {_explain(err)}") from err
    except docker.errors.APIError as err:
        if "is too new" in _explain(err):
            # The daemon was downgraded: negotiate again with the next client.
            _api_versions.clear()
        raise DockerError(f"{doing}: {_explain(err)}") from err
    except docker.errors.DockerException as err:
        # docker-py raises a bare DockerException when it cannot even reach the
        # daemon to negotiate the API version.
        raise DockerUnavailable(f"{doing}: Docker daemon unreachable: {err}") from err
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
        raise DockerUnavailable(f"{doing}: Docker daemon unreachable: {err}") from err


def _explain(err: docker.errors.APIError) -> str:
    explanation = getattr(err, "explanation", None)
    if explanation:
        return str(explanation.decode() if isinstance(explanation, bytes) else explanation)
    return str(err)
