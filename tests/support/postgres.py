"""A real PostgreSQL image for tests: Debian bookworm's ``postgresql-15``, built
here with the nginx image's machinery (:func:`tests.support.nginx.ensure_debian_image`:
debootstrap, apt, ``docker import``, cached by the hash of this recipe as a
tarball under ``/var/cache/dockerops-tests`` and as a tag in the daemon).

The entrypoint runs ``postgres`` as the ``postgres`` user on the data directory
mounted at :data:`PGDATA` (``initdb`` first when it is empty; peer
authentication on the socket, so clients run as that user: ``runuser -u
postgres -- psql``), listening on the container's own loopback only. It
``exec``s postgres, so postgres gets the stop signal itself.

PostgreSQL's signals: SIGTERM is a *smart* shutdown (it waits until every
client has disconnected: a connected client keeps it up until Docker's grace
period ends in a SIGKILL, and the next start is a crash recovery), SIGINT a
*fast* shutdown (clients disconnected, a shutdown checkpoint, a clean stop).
The image's STOPSIGNAL is SIGINT for that reason. Run it with ``init: true``:
as PID 1 the postmaster would reap what ``docker exec`` leaves orphaned and
take one killed by a signal for a crashed server process (every session
ended, crash recovery).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import docker

from tests.support import nginx

REPOSITORY = "dockerops-test/postgres"
PACKAGES = ("postgresql-15",)
PGDATA = "/var/lib/postgresql/data"
BIN = "/usr/lib/postgresql/15/bin"
STOPSIGNAL = "SIGINT"
ENTRYPOINT = "/usr/local/bin/postgres-entrypoint"
ENTRYPOINT_SCRIPT = """\
#!/bin/sh
# PostgreSQL 15 on the data directory mounted at $PGDATA, as the postgres user.
set -eu
mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 0700 "$PGDATA"
# A socket lock left by the previous run of this container (nothing else runs yet).
rm -f /run/postgresql/.s.PGSQL.*
as_postgres="setpriv --reuid=postgres --regid=postgres --init-groups --"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    $as_postgres initdb -D "$PGDATA" -U postgres -E UTF8 --no-locale \\
        --auth-local=peer --auth-host=scram-sha-256
fi
# exec: postgres itself gets the stop signal (setpriv execs, it does not fork).
exec $as_postgres postgres -D "$PGDATA" -c listen_addresses=localhost -c jit=off "$@"
"""
# pg_isready as the postgres user: peer authentication lets it in, so the
# probes leave no "authentication failed" lines in the log.
HEALTH_TEST = [
    "CMD",
    "setpriv",
    "--reuid=postgres",
    "--regid=postgres",
    "--init-groups",
    "--",
    "pg_isready",
    "-q",
]
HEALTH_OPTIONS = "--interval=500ms --timeout=3s --start-period=60s --retries=3"
DOCKERFILE_TAIL = f"""\
ENV PATH={BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PGDATA={PGDATA}
STOPSIGNAL {STOPSIGNAL}
HEALTHCHECK {HEALTH_OPTIONS} CMD {json.dumps(HEALTH_TEST[1:])}
ENTRYPOINT ["{ENTRYPOINT}"]
"""


def recipe() -> str:
    """Everything the image is built from; its hash is the image's tag (bump
    the "v1" when :func:`_configure` changes)."""
    return "\n".join(
        [nginx.SUITE, nginx.MIRROR, *PACKAGES, ENTRYPOINT_SCRIPT, DOCKERFILE_TAIL, "v1"]
    )


def image_ref() -> str:
    return f"{REPOSITORY}:{hashlib.sha256(recipe().encode()).hexdigest()[:12]}"


def ensure_image(client: docker.DockerClient) -> str:
    """The PostgreSQL test image's reference; built (or imported from the cache) if missing."""
    return nginx.ensure_debian_image(client, image_ref(), PACKAGES, _configure, DOCKERFILE_TAIL)


def _configure(root: Path) -> None:
    # The package's postinst made a cluster of its own (/etc/postgresql/15/main):
    # the image initialises one on the mounted data directory instead.
    for leftover in ("etc/postgresql/15", "var/lib/postgresql/15"):
        shutil.rmtree(root / leftover, ignore_errors=True)
    # LLVM serves only JIT compilation (off here): a third of the image.
    shutil.rmtree(root / "usr/lib/postgresql/15/lib/bitcode", ignore_errors=True)
    (root / "usr/lib/postgresql/15/lib/llvmjit.so").unlink(missing_ok=True)
    for library in (root / "usr/lib/x86_64-linux-gnu").glob("libLLVM-*"):
        library.unlink()
    script = root / ENTRYPOINT.lstrip("/")
    script.write_text(ENTRYPOINT_SCRIPT)
    script.chmod(0o755)
