"""A real nginx image for tests, built here from Debian's packages (no registry pull).

``debootstrap --variant=minbase`` a bookworm root, ``apt-get install nginx`` in
it, replace its main config with a small one that includes ``conf.d/*.conf`` and
logs to stderr (so ``docker logs`` shows nginx's ``[emerg]`` lines), then
``docker import`` it (plus a two-line build for ``STOPSIGNAL``). The
minbase root is debootstrapped once and kept as a tarball too: other test
images (``tests/support/postgres.py``) start from it through
:func:`ensure_debian_image`. The image is
tagged by the hash of this recipe: a daemon that has the tag skips the build,
and a tarball kept under
``/var/cache/dockerops-tests`` (``DOCKEROPS_TEST_CACHE``) spares a fresh daemon
the debootstrap. Building needs root and ``debootstrap``
(``scripts/host-packages.sh`` installs it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import docker
import docker.errors

REPOSITORY = "dockerops-test/nginx"
SUITE = "bookworm"
MIRROR = os.environ.get("DOCKEROPS_TEST_MIRROR", "http://deb.debian.org/debian")
CACHE = Path(os.environ.get("DOCKEROPS_TEST_CACHE", "/var/cache/dockerops-tests"))
PACKAGES = ("nginx",)
# What the image runs: nginx's master as PID 1, in the foreground; SIGQUIT is
# its graceful stop, SIGHUP its reload.
CMD = '["nginx", "-g", "daemon off;"]'
STOPSIGNAL = "SIGQUIT"
NGINX_CONF = """\
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log stderr notice;
events { worker_connections 64; }
http {
    access_log off;
    default_type text/plain;
    include /etc/nginx/conf.d/*.conf;
}
"""
# A healthcheck for the pillar: GET /healthz on port 80 through bash's
# /dev/tcp (minbase has no curl or wget); healthy only on a 200 answer, so the
# loaded config decides the health.
HEALTH_TEST = (
    "exec 3<>/dev/tcp/127.0.0.1/80 && "
    "printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"
)
HEALTHCHECK = {
    "test": ["CMD", "bash", "-c", HEALTH_TEST],
    "interval": "500ms",
    "timeout": "2s",
    "retries": 2,
}


def recipe() -> str:
    """Everything the image is built from; its hash is the image's tag."""
    return "\n".join([SUITE, MIRROR, *PACKAGES, CMD, STOPSIGNAL, NGINX_CONF, "v1"])


def image_ref() -> str:
    return f"{REPOSITORY}:{hashlib.sha256(recipe().encode()).hexdigest()[:12]}"


def ensure_image(client: docker.DockerClient) -> str:
    """The nginx test image's reference; built (or imported from the cache) if missing."""
    return ensure_debian_image(
        client,
        image_ref(),
        PACKAGES,
        _configure_nginx,
        f"STOPSIGNAL {STOPSIGNAL}\nCMD {CMD}\n",
    )


def ensure_debian_image(
    client: docker.DockerClient,
    ref: str,
    packages: Sequence[str],
    configure: Callable[[Path], None],
    dockerfile_tail: str,
) -> str:
    """The local image ``ref``: a bookworm minbase root with ``packages``
    installed, then changed by ``configure(root)``, imported, with
    ``dockerfile_tail`` (Dockerfile lines) on top. Built, or imported from the
    tarball cached under CACHE, only when the daemon lacks ``ref``; ``ref``'s
    tag must be the hash of everything the image is built from."""
    if _has(client, ref):
        return ref
    name = ref.split(":", 1)[0].rsplit("/", 1)[-1]
    CACHE.mkdir(parents=True, exist_ok=True)
    with _locked(CACHE / f"{name}.lock"):
        if _has(client, ref):
            return ref
        tarball = CACHE / f"{name}-{ref.rsplit(':', 1)[1]}.tar"
        if not tarball.is_file():
            _build_rootfs_tarball(tarball, packages, configure)
        # `docker import -c` takes no STOPSIGNAL: a small build on top of
        # the imported root sets it (FROM a local image: nothing is pulled).
        repository = ref.rsplit(":", 1)[0]
        base = ref.replace(repository, repository + "-rootfs", 1)
        with open(tarball, "rb") as handle:
            result = subprocess.run(
                ["docker", "import", "-", base], stdin=handle, capture_output=True, text=True
            )
        if result.returncode != 0:
            raise RuntimeError(f"docker import of {tarball} failed: {result.stderr[-2000:]}")
        dockerfile = f"FROM {base}\n{dockerfile_tail}"
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=ref, rm=True)
    return ref


def _has(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({result.returncode}):\n"
            + (result.stdout + result.stderr)[-3000:]
        )


def _configure_nginx(root: Path) -> None:
    (root / "etc/nginx/nginx.conf").write_text(NGINX_CONF)
    for leftover in (root / "etc/nginx/sites-enabled").glob("*"):
        leftover.unlink()


def _minbase(root: Path) -> bool:
    """A bookworm minbase root at ``root``: debootstrapped once, then unpacked
    from its tarball in CACHE (every image built here starts from it). True
    when it came from the cache (its package lists may be old)."""
    key = hashlib.sha256(f"{SUITE} {MIRROR}".encode()).hexdigest()[:12]
    tarball = CACHE / f"minbase-{key}.tar"
    with _locked(CACHE / "minbase.lock"):
        if not tarball.is_file():
            _run("debootstrap", "--variant=minbase", SUITE, str(root), MIRROR)
            for deb in (root / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()  # debootstrap's downloads, installed already
            partial = tarball.with_suffix(".partial")
            _run("tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), ".")
            os.replace(partial, tarball)
            return False
    root.mkdir()
    _run("tar", "-C", str(root), "--numeric-owner", "-xf", str(tarball))
    return True


def _build_rootfs_tarball(
    tarball: Path, packages: Sequence[str], configure: Callable[[Path], None]
) -> None:
    """A minbase root + ``packages`` in a directory, ``configure``d, tarred to
    ``tarball`` (atomically)."""
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is missing: run scripts/host-packages.sh as root")
    work = Path(tempfile.mkdtemp(prefix=f"{tarball.stem}-rootfs-", dir=tarball.parent))
    root = work / "root"
    proc = root / "proc"
    try:
        update = "apt-get update -q && " if _minbase(root) else ""
        _run("mount", "-t", "proc", "proc", str(proc))
        # No service a package's postinst would start runs inside the build root.
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        try:
            _run(
                "chroot",
                str(root),
                "sh",
                "-c",
                update
                + "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
                + " ".join(packages)
                + " && apt-get clean",
            )
        finally:
            _run("umount", str(proc))
        policy.unlink()
        for path in ("var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale"):
            shutil.rmtree(root / path, ignore_errors=True)
        configure(root)
        partial = work / "rootfs.tar"
        _run("tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), ".")
        os.replace(partial, tarball)
    finally:
        if proc.is_mount():
            subprocess.run(["umount", "-l", str(proc)], check=False)
        shutil.rmtree(work, ignore_errors=True)
