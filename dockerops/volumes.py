"""Backups of Docker volumes: restic in a throwaway helper container.

A ``data`` entry may name a Docker volume (on NFS, SMB, tmpfs...) instead of a
host directory. The host cannot read such a volume (it is mounted only while
a container uses it), so restic runs in a helper container that mounts it:

- :func:`helper_image`: a tiny local image holding the host's own ``restic``
  and ``busybox`` and the shared libraries ``ldd`` lists for them (and the
  host's CA bundle, for remote repositories). It is made with ``docker
  import`` from a tar built here (nothing is pulled) and tagged by the
  sha256 of what it holds, so it is built once per restic version.
- :func:`container_executor`: a :data:`dockerops.restic.Executor` running
  restic in that image. The service's data mounts are mounted at their
  container paths (volumes by name, host paths as binds), so a snapshot's
  paths are the container paths whichever way the data is stored. The
  password and the environment (the repository location may carry
  credentials) go in 0400 files of a private 0700 directory, bind-mounted
  read-only and removed afterwards: never in the container's env or command
  line, which ``docker inspect`` shows.
- :func:`set_aside` / :func:`put_back`: what a restore does with a volume's
  current data. It is copied into a new local volume
  ``<volume>-before-restore-<UTC time>``, the copy is compared with the
  original (every name, type, mode, owner, size, link target and file
  sha256), and only then is the volume emptied for the restore to refill.
  ``put_back`` copies it back (and compares again) when the restore fails.
  The aside volume is never removed by dockerops.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests.exceptions
from docker.types import LogConfig

from .client import translate_errors
from .errors import DockerError, NotFound
from .host import DockerHost, _check_bind
from .replicas import LABEL_MANAGED
from .restic import Executor, ResticError, ResticRun
from .spec import VOLUME_NAME_RE, DataMount, ServiceSpec

HELPER_REPOSITORY = "dockerops-restic-helper"
# Marks a helper container (never a replica: no service label); its value names the service.
LABEL_HELPER = "io.dockerops.helper"
# Marks an aside volume: the volume whose data it holds.
LABEL_ASIDE_OF = "io.dockerops.aside-of"
# Bumped when the image's layout changes, so that an old one is not reused.
_LAYOUT = "1"
_RESTIC = "/usr/bin/restic"
_BUSYBOX = "/bin/busybox"
_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Where the private files are seen in the container.
_SECRETS_DIR = "/run/dockerops-restic"
# restic's cache inside the container when the caller gives none (discarded with it).
_SCRATCH_CACHE = "/tmp/restic-cache"
# Copying a volume aside (or back) may take long: bounded all the same.
COPY_TIMEOUT = 24 * 3600.0
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Repository backends the helper can reach: restic's own Go clients. sftp and
# rclone run another program (ssh, rclone), which the image does not hold.
_HELPER_BACKENDS = ("rest:", "s3:", "b2:", "azure:", "gs:", "swift:")


# --- the helper image --------------------------------------------------------------------------


def shared_libraries(binary: str) -> list[str]:
    """The shared libraries (and loader) ``ldd`` lists for ``binary``; [] when static."""
    try:
        done = subprocess.run(
            ["ldd", binary], capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError:
        raise DockerError("ldd is not installed (Debian: libc-bin)") from None
    if "not a dynamic executable" in done.stdout + done.stderr:
        return []
    if done.returncode != 0:
        raise DockerError(f"ldd {binary}: {done.stderr.strip() or f'exit {done.returncode}'}")
    out = []
    for line in done.stdout.splitlines():
        # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
        words = line.split()
        path = words[2] if "=>" in words and len(words) > 2 else words[0] if words else ""
        if path.startswith("/"):
            out.append(path)
    return out


def _helper_files(restic: str, busybox: str) -> list[tuple[str, bytes, int]]:
    """(path in the image, content, mode) of every file the helper image holds."""
    files: dict[str, tuple[bytes, int]] = {}
    for binary, target in ((restic, _RESTIC), (busybox, _BUSYBOX)):
        if not os.path.exists(binary):
            package = "restic" if target == _RESTIC else "busybox-static"
            raise DockerError(f"{binary} is not installed (Debian: apt-get install {package})")
        with open(binary, "rb") as handle:
            files[target] = (handle.read(), 0o755)
        for library in shared_libraries(binary):
            with open(library, "rb") as handle:  # the link's target, at the path ldd names
                files[library] = (handle.read(), 0o755)
    if os.path.exists(_CA_BUNDLE):
        with open(_CA_BUNDLE, "rb") as handle:
            files[_CA_BUNDLE] = (handle.read(), 0o644)
    return [(path, content, mode) for path, (content, mode) in sorted(files.items())]


def _tar(files: list[tuple[str, bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    dirs = {"tmp": 0o1777, "root": 0o700, "run": 0o755}
    for path, _content, _mode in files:
        parts = path.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            dirs.setdefault("/".join(parts[:depth]), 0o755)
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, mode in sorted(dirs.items()):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        for path, content, mode in files:
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def helper_image(host: DockerHost, restic: str = _RESTIC, busybox: str = _BUSYBOX) -> str:
    """The helper image's reference, imported first when the daemon lacks it."""
    files = _helper_files(restic, busybox)
    digest = hashlib.sha256(_LAYOUT.encode())
    for path, content, mode in files:
        digest.update(f"{path}\0{mode}\0{hashlib.sha256(content).hexdigest()}\0".encode())
    tag = digest.hexdigest()[:20]
    ref = f"{HELPER_REPOSITORY}:{tag}"
    try:
        host.inspect_image(ref)
        return ref
    except NotFound:
        pass
    with translate_errors(f"importing the restic helper image {ref}"):
        host.api.import_image_from_data(_tar(files), repository=HELPER_REPOSITORY, tag=tag)
    return ref


# --- running the helper ------------------------------------------------------------------------


@dataclass(frozen=True)
class HelperMount:
    """A mount of the helper container: a host path or a volume's name, at ``target``."""

    source: str
    target: str
    writable: bool

    @property
    def bind(self) -> str:
        return f"{self.source}:{self.target}:{'rw' if self.writable else 'ro'}"


def run_helper(
    host: DockerHost,
    image: str,
    command: list[str],
    mounts: list[HelperMount],
    service: str,
    timeout: float | None,
    what: str,
    network: bool = False,
) -> ResticRun:
    """Run ``command`` once in a throwaway helper container; its exit and output.

    stdout and stderr are read back separately (from Docker's json-file log);
    the container is removed whatever happens. Past ``timeout`` it is killed
    and a :class:`ResticError` says so. ``network``: the default bridge
    (a remote repository), else none.
    """
    name = f"dockerops-restic-{service}-{secrets.token_hex(4)}"
    host_config = host.api.create_host_config(
        binds=[mount.bind for mount in mounts] or None,
        network_mode="bridge" if network else "none",
        restart_policy={"Name": "no"},
        # Unrotated: the output is read whole, and goes with the container.
        log_config=LogConfig(type="json-file", config={}),
        security_opt=["no-new-privileges:true"],
    )
    doing = f"the restic helper container of service {service}"
    with translate_errors(f"creating {doing}"):
        created = host.api.create_container(
            image=image,
            name=name,
            command=command,
            labels={LABEL_HELPER: service},
            host_config=host_config,
            healthcheck={"test": ["NONE"]},
            working_dir="/",
            detach=True,
        )
    container_id = str(created["Id"])
    try:
        with translate_errors(f"starting {doing}"):
            host.api.start(container_id)
        with translate_errors(f"waiting for {doing}"):
            try:
                waited = host.api.wait(container_id, timeout=timeout)
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                raise ResticError(
                    f"{what} in {doing} took longer than {timeout or 0:g}s: stopped"
                ) from None
        with translate_errors(f"reading the output of {doing}"):
            stdout = host.api.logs(container_id, stdout=True, stderr=False)
            stderr = host.api.logs(container_id, stdout=False, stderr=True)
        return ResticRun(int(waited.get("StatusCode", -1)), bytes(stdout), bytes(stderr))
    finally:
        host.remove(container_id, name, graceful=False)


def _option_value(args: list[str], option: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def _local_repository(location: str) -> str | None:
    path = location.removeprefix("local:")
    return path if path.startswith("/") else None


def data_mounts(spec: ServiceSpec, mounts: list[DataMount], writable: bool) -> list[HelperMount]:
    """The helper's mounts of ``mounts``: each at its container path; host
    paths checked for planted symlinks as a replica's binds are."""
    out = []
    for mount in mounts:
        if mount.host is not None:
            root = spec.trusted_root(mount.host)
            _check_bind(root, mount.host, not writable, f"the restic helper of {spec.name}")
        out.append(HelperMount(mount.source, mount.container, writable))
    return out


def container_executor(
    host: DockerHost,
    spec: ServiceSpec,
    mounts: list[DataMount],
    writable: bool = False,
    image: str | None = None,
    secrets_dir: str | None = None,
) -> Executor:
    """A :data:`dockerops.restic.Executor` running restic in a helper
    container that mounts ``mounts`` (``writable`` for a restore) at their
    container paths.

    A local repository (``RESTIC_REPOSITORY`` a path) is mounted at its own
    path, and the container has no network; a remote one needs restic's own
    client (rest, s3, b2, azure, gs, swift). restic's ``--cache-dir``, when
    given, is mounted at its own path (made 0700 if missing). The private
    files live in a new 0700 directory below ``secrets_dir`` (the system's
    temp dir by default), removed after each run.
    """
    helper_mounts = data_mounts(spec, mounts, writable)
    ref = image or helper_image(host)

    def run(
        args: list[str], env: Mapping[str, str], password: str, timeout: float | None
    ) -> ResticRun:
        location = env.get("RESTIC_REPOSITORY", "")
        repository = _local_repository(location)
        if repository is None and not location.startswith(_HELPER_BACKENDS):
            raise ResticError(
                "the restic helper container reaches a local repository or a rest:, s3:, "
                "b2:, azure:, gs: or swift: one (sftp and rclone need programs it lacks)"
            )
        extra = [HelperMount(repository, repository, True)] if repository else []
        cache = _option_value(args, "--cache-dir")
        full_env = {"HOME": "/root", "TMPDIR": "/tmp", "LC_ALL": "C", **env}
        if cache is not None:
            os.makedirs(cache, mode=0o700, exist_ok=True)
            extra.append(HelperMount(cache, cache, True))
        else:
            full_env.setdefault("RESTIC_CACHE_DIR", _SCRATCH_CACHE)
        private = tempfile.mkdtemp(prefix="dockerops-restic-", dir=secrets_dir)
        try:
            _write_private(f"{private}/password", password + "\n")
            full_env["RESTIC_PASSWORD_FILE"] = f"{_SECRETS_DIR}/password"
            _write_private(f"{private}/env", _env_script(full_env))
            script = f'set -a; . {_SECRETS_DIR}/env; exec {_RESTIC} "$@"'
            return run_helper(
                host,
                ref,
                [_BUSYBOX, "sh", "-c", script, "restic", *args],
                [*helper_mounts, *extra, HelperMount(private, _SECRETS_DIR, False)],
                spec.name,
                timeout,
                f"restic {args[0] if args else ''}".strip(),
                network=repository is None,
            )
        finally:
            shutil.rmtree(private, ignore_errors=True)

    return run


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _env_script(env: Mapping[str, str]) -> str:
    lines = []
    for key, value in sorted(env.items()):
        if not _ENV_NAME_RE.fullmatch(key):
            raise ValueError(f"not an environment variable name: {key!r}")
        lines.append(f"{key}={shlex.quote(value)}\n")
    return "".join(lines)


# --- a volume's data set aside for a restore ---------------------------------------------------

# Every name, type, mode, owner and size (not a directory's: it depends on the
# filesystem), link target, and each file's sha256, sorted: equal listings
# mean an equal copy.
_MANIFEST = """
manifest() (
    cd "$1"
    find . ! -type d -exec stat -c '%N|%F|%a|%u|%g|%s' {} + | sort
    find . -type d -exec stat -c '%N|%F|%a|%u|%g' {} + | sort
    find . -type f -exec sha256sum {} + | sort
)
copy_and_compare() {
    tar -C "$1" -cf - . | tar -C "$2" -xpf -
    manifest "$1" > /tmp/from
    manifest "$2" > /tmp/to
    if ! cmp -s /tmp/from /tmp/to; then
        echo "the copy of $1 in $2 differs from it:" >&2
        diff /tmp/from /tmp/to | head -n 20 >&2
        exit 3
    fi
}
empty() {
    find "$1" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
    if [ -n "$(ls -A "$1")" ]; then echo "$1 could not be emptied" >&2; exit 4; fi
}
set -eu -o pipefail
"""


def aside_name(volume: str, now: float | None = None) -> str:
    """``<volume>-before-restore-<UTC time>`` (the volume's name cut to fit)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    suffix = f"-before-restore-{stamp}"
    name = volume[: 255 - len(suffix) - 4] + suffix
    assert VOLUME_NAME_RE.fullmatch(name)
    return name


def _volume_exists(host: DockerHost, name: str) -> bool:
    try:
        with translate_errors(f"inspecting volume {name}"):
            host.api.inspect_volume(name)
    except NotFound:
        return False
    return True


def _copy(
    host: DockerHost,
    service: str,
    script: str,
    mounts: list[HelperMount],
    image: str | None,
    timeout: float,
    doing: str,
) -> None:
    done = run_helper(
        host,
        image or helper_image(host),
        [_BUSYBOX, "sh", "-c", _MANIFEST + script],
        mounts,
        service,
        timeout,
        doing,
    )
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()[-2000:]
        raise DockerError(f"{doing}: {detail or f'exit {done.returncode}'}")


def set_aside(
    host: DockerHost,
    service: str,
    mount: DataMount,
    now: float | None = None,
    image: str | None = None,
    timeout: float = COPY_TIMEOUT,
    empty: bool = True,
) -> str:
    """Copy a volume's data into a new local volume, compare the copy, then
    empty the volume (for a restore to refill; not with ``empty=False``, for a
    caller that records the copy first); the new volume's name.

    The replicas must be stopped (a copy of changing data does not compare
    equal, and nothing is emptied then). On any failure the volume is left
    as it was and the aside volume (maybe a partial copy) stays. The aside
    volume is always a plain local one: one made with the volume's own
    options would be the same NFS export or bound directory.
    """
    if mount.volume is None:
        raise ValueError(f"{mount.container} is a host path, not a volume")
    base = aside_name(mount.volume, now)
    aside, n = base, 1
    while _volume_exists(host, aside):
        n += 1
        aside = f"{base}-{n}"
    with translate_errors(f"creating volume {aside}"):
        host.api.create_volume(
            aside,
            driver="local",
            labels={LABEL_MANAGED: "true", LABEL_ASIDE_OF: mount.volume},
        )
    _copy(
        host,
        service,
        "copy_and_compare /volume /aside\n" + ("empty /volume\n" if empty else ""),
        [HelperMount(mount.volume, "/volume", True), HelperMount(aside, "/aside", True)],
        image,
        timeout,
        f"setting the data of volume {mount.volume} aside in {aside}",
    )
    return aside


def put_back(
    host: DockerHost,
    service: str,
    mount: DataMount,
    aside: str,
    image: str | None = None,
    timeout: float = COPY_TIMEOUT,
) -> None:
    """Empty the volume and copy the aside volume's data back into it (then
    compare). The aside volume stays, unchanged (mounted read-only)."""
    if mount.volume is None:
        raise ValueError(f"{mount.container} is a host path, not a volume")
    if not _volume_exists(host, aside):
        raise DockerError(f"putting back volume {mount.volume}: volume {aside} is not there")
    _copy(
        host,
        service,
        "empty /volume\ncopy_and_compare /aside /volume\n",
        [HelperMount(mount.volume, "/volume", True), HelperMount(aside, "/aside", False)],
        image,
        timeout,
        f"putting the data of volume {mount.volume} back from {aside}",
    )


def asides(host: DockerHost, volume: str) -> list[str]:
    """The aside volumes holding earlier data of ``volume``, oldest first."""
    with translate_errors("listing volumes"):
        found: dict[str, Any] = host.api.volumes(filters={"label": f"{LABEL_ASIDE_OF}={volume}"})
    return sorted(str(v["Name"]) for v in found.get("Volumes") or [])


def fill(
    host: DockerHost,
    service: str,
    staging: str,
    subpath: str,
    target: HelperMount,
    image: str | None = None,
    timeout: float = COPY_TIMEOUT,
) -> None:
    """Empty ``target`` (a volume or host directory, set aside before) and
    copy ``subpath`` of the staging volume into it, then compare the copy."""
    inner = "/staging/" + subpath.strip("/")
    _copy(
        host,
        service,
        f"empty /volume\ncopy_and_compare {shlex.quote(inner)} /volume\n",
        [HelperMount(staging, "/staging", False), HelperMount(target.source, "/volume", True)],
        image,
        timeout,
        f"filling {target.source} from the restored snapshot",
    )


def make_staging(host: DockerHost, service: str, now: float | None = None) -> str:
    """A new local volume a snapshot is restored into before anything is touched."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    name = f"dockerops-restore-{service}-{stamp}-{secrets.token_hex(3)}"
    with translate_errors(f"creating volume {name}"):
        host.api.create_volume(name, driver="local", labels={LABEL_MANAGED: "true"})
    return name


def drop_staging(host: DockerHost, name: str) -> None:
    """Remove a staging volume (dockerops' own copy of a snapshot)."""
    if not name.startswith("dockerops-restore-"):
        raise ValueError(f"{name} is not a staging volume")
    with translate_errors(f"removing volume {name}"):
        try:
            host.api.remove_volume(name, force=True)
        except Exception as err:  # gone already is fine
            if "no such volume" not in str(err).lower():
                raise
