"""The Docker client, and the one place that translates docker-py errors.

``docker_client(opts, context)`` caches one client per daemon URL in Salt's
``__context__`` (any dict works), so a state run talks to the daemon over one
connection pool.
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


def docker_url(opts: MutableMapping[str, Any]) -> str:
    """The daemon this minion manages: minion option ``dockerops.docker_url``."""
    return str(opts.get("dockerops.docker_url") or DEFAULT_URL)


def docker_client(
    opts: MutableMapping[str, Any], context: MutableMapping[str, Any] | None = None
) -> docker.DockerClient:
    """Return a (cached) client for the minion's Docker daemon."""
    url = docker_url(opts)
    timeout = int(opts.get("dockerops.docker_timeout") or DEFAULT_TIMEOUT)
    cache: dict[str, docker.DockerClient] = {}
    if context is not None:
        cache = context.setdefault(CONTEXT_KEY, {})
    client = cache.get(url)
    if client is None:
        with translate_errors(f"connecting to the Docker daemon at {url}"):
            client = docker.DockerClient(base_url=url, timeout=timeout, version="auto")
        cache[url] = client
    return client


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
