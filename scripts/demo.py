"""The dockerops demo: masterless Salt deploys the demo service from pillar/.

Run by `make demo` after the set-up (packages, venv, dockerd). It uses this
machine's Docker daemon and the repository itself as file_roots, with the
minion id `int-demo`, so pillar/top.sls gives it the integration environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "build" / "demo"
SALT_CALL = str(Path(sys.executable).parent / "salt-call")
# Staging (pillar/top.sls: stg-*): runs 1.0, while integration already runs 1.1.
MINION_ID = "stg-demo"


def step(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def salt_call(*args: str, out: str = "highstate") -> subprocess.CompletedProcess[str]:
    cmd = [SALT_CALL, "-c", str(WORK), "--local", f"--out={out}", "--retcode-passthrough", *args]
    print("$ salt-call --local " + " ".join(args), flush=True)
    proc = subprocess.run(cmd, text=True, capture_output=True, check=False)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"demo failed: salt-call {' '.join(args)} exited {proc.returncode}")
    return proc


def write_minion_config() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "minion").write_text(
        "\n".join(
            [
                f"id: {MINION_ID}",
                "file_client: local",
                f"root_dir: {WORK / 'root'}",
                "file_roots:",
                f"  base: [{REPO / 'salt'}]",
                "pillar_roots:",
                f"  base: [{REPO / 'pillar'}]",
                "state_output: changes",
                "",
            ]
        )
    )


def rolling_update(service: str, tag: str) -> None:
    """Run dockerops.rolling_update, printing its progress lines as they come."""
    cmd = [
        SALT_CALL,
        "-c",
        str(WORK),
        "--local",
        "--out=json",
        "--retcode-passthrough",
        "--log-level=info",
        "dockerops.rolling_update",
        service,
        f"tag={tag}",
    ]
    print(f"$ salt-call --local dockerops.rolling_update {service} tag={tag}", flush=True)
    proc = subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:
        if "dockerops rollout" in line:
            print("  " + line.split("dockerops rollout", 1)[1].strip(), flush=True)
    result = json.loads(proc.stdout.read())["local"]
    proc.wait()
    print(f"  result: {result['result']}  {result['from']} -> {result['to']}")
    for line in result.get("steps", []):
        print(f"    {line}")
    if result.get("note"):
        print(f"  note: {result['note']}")
    if proc.returncode != 0:
        raise SystemExit(f"demo failed: rolling update exited {proc.returncode}")


def in_replica(script: str) -> str:
    """Run a shell snippet in a replica of web (as the app would write)."""
    status = json.loads(salt_call("dockerops.status", "web", out="json").stdout)["local"]
    container = sorted(row["container"] for row in status["web"])[0]
    done = subprocess.run(
        ["docker", "exec", container, "/bin/sh", "-c", script],
        text=True,
        capture_output=True,
        check=True,
    )
    return done.stdout


def replica_ports() -> list[int]:
    """The host ports web's replicas publish now (slots move in start-first rollouts)."""
    status = json.loads(salt_call("dockerops.status", "web", out="json").stdout)["local"]
    ports = [int(p.split(":")[1].split("->")[0]) for r in status["web"] for p in r["ports"]]
    return sorted(ports)


def show_versions() -> None:
    for port in replica_ports():
        print(f"  http://127.0.0.1:{port}/version -> {fetch(port, '/version')}")


def fetch(port: int, path: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                return resp.read().decode().strip()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def main() -> None:
    step("building the demo images locally from busybox-static (no download)")
    subprocess.run([str(REPO / "images" / "build.sh")], check=True)

    step(f"masterless minion '{MINION_ID}' (environment from pillar/top.sls: staging)")
    write_minion_config()
    synced = json.loads(salt_call("saltutil.sync_all", out="json").stdout)["local"]
    print("synced from file_roots:", ", ".join(synced["modules"] + synced["states"]))

    step("what pillar asks for, against what runs now")
    print(salt_call("dockerops.services", out="yaml").stdout)

    step("highstate: converge this host to pillar")
    print(salt_call("state.apply", "dockerops").stdout)

    step("the service answers on 127.0.0.1")
    show_versions()

    step("a second highstate changes nothing")
    second = json.loads(salt_call("state.apply", "dockerops", out="json").stdout)["local"]
    changed = [s["name"] for s in second.values() if s["changes"]]
    print("  states with changes:", changed or "none")

    step("a config change: motd.txt edited (here by a pillar override on the command line)")
    motd = f"Welcome to the dockerops demo (config changed at {time.strftime('%H:%M:%S')}).\n"
    override = json.dumps(
        {
            "dockerops": {
                "services": {"web": {"config": {"files": {"motd.txt": {"contents": motd}}}}}
            }
        }
    )
    print(
        "rolling restart: a replica at a time, each replacement healthy before the next"
        " starts; an old replica stops only once its replacement has stayed healthy"
    )
    print(salt_call("state.apply", "dockerops", f"pillar={override}").stdout)
    port = replica_ports()[-1]
    print(f"  http://127.0.0.1:{port}/cgi-bin/config ->")
    for line in fetch(port, "/cgi-bin/config").splitlines():
        print("    " + line)

    step("rolling update to 1.1 (health-gated, start-first: capacity never drops)")
    rolling_update("web", "1.1")
    show_versions()

    step("dockerops.history web")
    print(salt_call("dockerops.history", "web", "limit=3", out="yaml").stdout)

    step("the app writes to its data mount (/srv/dockerops/web/data on the host)")
    in_replica('echo "$(date -u) hello from $HOSTNAME" >> /data/guestbook.txt')
    print("  /data/guestbook.txt: " + in_replica("cat /data/guestbook.txt").strip())
    step("backup of web's data (restic; consistency stop: stopped, snapshot, healthy again)")
    print(salt_call("dockerops.backup", "web", out="yaml").stdout)
    step("dockerops.backups web")
    print(salt_call("dockerops.backups", "web", out="yaml").stdout)
    step("dockerops.verify_backup web (restic check, then a test restore compared by checksum)")
    print(salt_call("dockerops.verify_backup", "web", out="yaml").stdout)
    step("the guestbook is lost; dockerops.restore web test=True says what differs")
    in_replica("rm /data/guestbook.txt")
    print(salt_call("dockerops.restore", "web", "test=True", out="yaml").stdout)
    step("dockerops.restore web: the previous data kept aside, the snapshot back, healthy again")
    print(salt_call("dockerops.restore", "web", out="yaml").stdout)
    print("  /data/guestbook.txt: " + in_replica("cat /data/guestbook.txt").strip())

    step("dockerops.status")
    print(salt_call("dockerops.status", "web", out="yaml").stdout)
    print("Done. Remove the demo containers with:")
    print(f"  {SALT_CALL} -c {WORK} --local state.apply dockerops.clean")


if __name__ == "__main__":
    main()
