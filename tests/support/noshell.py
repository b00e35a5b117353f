"""A test image with no shell and no tools: FROM scratch, only Debian's
busybox-static binary under a name no ``docker exec`` would guess
(``/opt/tool/busybox.static``; busybox picks the applet from its first
argument as long as its own name starts with ``busybox``). No /bin, no
/bin/sh: ``docker exec <replica> sh`` fails.

Built locally (nothing pulled), tagged by the hash of the recipe and of the
binary: a daemon that has the tag skips the build.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import docker
import docker.errors

REPOSITORY = "dockerops-test/noshell"
BUSYBOX = Path("/bin/busybox")
TOOL = "/opt/tool/busybox.static"
DOCKERFILE = f"FROM scratch\nCOPY busybox.static {TOOL}\n"


def image_ref() -> str:
    recipe = hashlib.sha256(DOCKERFILE.encode() + BUSYBOX.read_bytes()).hexdigest()[:12]
    return f"{REPOSITORY}:{recipe}"


def ensure_image(client: docker.DockerClient) -> str:
    """The image's reference, built when the daemon does not have it."""
    ref = image_ref()
    try:
        client.images.get(ref)
        return ref
    except docker.errors.ImageNotFound:
        pass
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data, mode in (
            ("Dockerfile", DOCKERFILE.encode(), 0o644),
            ("busybox.static", BUSYBOX.read_bytes(), 0o755),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=ref, rm=True)
    return ref
