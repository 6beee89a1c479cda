"""`deploys/full.py --dry` on the lab cluster predicts what the real run then does: the files whose
content changes (with their diff) and the services (re)started or stopped, host by host.

Each case changes some data, runs the dry run (nothing may change on a host), then the real run
with the same data, and compares the prediction with what changed on the hosts: each file's sha256
and each halo unit's InvocationID (a new one: the unit was (re)started) before and after. Then the
cluster's own data is applied again.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab import lab
from lab.pyinfra_cli import ENV, REPO

HOSTS = ("halo1", "halo2", "halo3")
FILES = "/etc/halo-provision/* /etc/systemd/system/halo-* /usr/local/libexec/halo-provision/*"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def state(name: str) -> tuple[dict[str, str], dict[str, str]]:
    """({file: sha256}, {halo unit: InvocationID or "" when it is not running}) of one host."""
    out = lab.ssh(name, f"sha256sum {FILES} 2>/dev/null; echo '##'; "
                  "for u in $(systemctl list-units 'halo-*' --all --plain --no-legend | awk '{print $1}'); do "
                  "echo \"$u $(systemctl is-active $u) $(systemctl show -p InvocationID --value $u)\"; done",
                  check=False).stdout
    files, _, units = out.partition("##\n")
    hashes = {path: digest for digest, path in (line.split(maxsplit=1) for line in files.splitlines())}
    ids = {}
    for line in units.splitlines():  # a stopped unit keeps its last InvocationID: it counts as none
        unit, active, *inv = line.split()
        ids[unit] = inv[0] if inv and active in ("active", "activating", "reloading") else ""
    return hashes, ids


def cluster_state() -> dict[str, tuple[dict, dict]]:
    return {name: state(name) for name in HOSTS}


def what_changed(before: dict, after: dict) -> dict[str, tuple[set[str], set[str]]]:
    """{host: (files created, changed or removed; units (re)started or stopped)}."""
    found = {}
    for name in HOSTS:
        (files0, units0), (files1, units1) = before[name], after[name]
        files = {f for f in files0.keys() | files1.keys() if files0.get(f) != files1.get(f)}
        units = {u for u in units0.keys() | units1.keys() if (units0.get(u) or "") != (units1.get(u) or "")}
        found[name] = (files, units)
    return found


def dry_run(cluster, **data: str) -> subprocess.CompletedProcess:
    """`pyinfra INVENTORY deploys/full.py --dry` as a user types it (no -y, no --diff)."""
    cmd = [sys.executable, "-m", "pyinfra", cluster.inventory, "deploys/full.py", "--dry"]
    for key, value in {**cluster.data, **data}.items():
        cmd += ["--data", f"{key}={value}"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, **ENV))


def predicted(output: str) -> dict[str, tuple[set[str], set[str]]]:
    """{host: (files it would create, modify or remove; units it would (re)start, reload or stop)}."""
    found = {name: (set(), set()) for name in HOSTS}
    for line in ANSI.sub("", output).splitlines():
        m = re.match(r"\s*\[(halo\d)\] Will (create|modify|remove) (\S+)\s*$", line)
        if m:
            found[m[1]][0].add(m[3])
        m = re.match(r"\s*\[(halo\d)\] Will (restart|start|stop|reload) (\S+):", line)
        if m and m[2] != "reload":  # a reload keeps the unit's InvocationID (checked from the run's lines)
            found[m[1]][1].add(m[3])
    return found


def reloads(output: str, verb: str) -> set[tuple[str, str]]:
    return set(re.findall(rf"\[(halo\d)\] {verb} (\S+?):", ANSI.sub("", output)))


def check_prediction(cluster, **data: str) -> dict:
    before = cluster_state()
    dry = dry_run(cluster, **data)
    output = dry.stdout + dry.stderr
    assert dry.returncode == 0, output
    assert cluster_state() == before, "the dry run changed a host"
    plan = predicted(output)
    real = cluster.run("deploys/full.py", **data)
    if real.returncode != 0:
        journals = {name: lab.ssh(name, "journalctl -u halo-firewall.service -n 20 --no-pager -o cat; "
                                  "systemctl status halo-firewall.service --no-pager", check=False).stdout
                    for name in HOSTS}
        pytest.fail(f"the real run failed:\n{real.stdout}{real.stderr}\nfirewall journals: {journals}")
    done = what_changed(before, cluster_state())
    print(f"predicted: {plan}\nchanged: {done}")
    assert plan == done, f"dry run:\n{output}\nreal run:\n{real.stdout}{real.stderr}"
    assert reloads(output, "Will reload") == reloads(real.stdout + real.stderr, "Reloading")
    return {"output": output, "plan": plan}


@pytest.fixture
def restore(cluster):
    yield
    back = cluster.run("deploys/full.py")
    assert back.returncode == 0, back.stdout + back.stderr


def test_a_head_setting_predicts_its_env_file_diff_and_the_restart(cluster, restore):
    seen = check_prediction(cluster, head_ctx_size="1024")
    assert seen["plan"]["halo1"] == ({"/etc/halo-provision/llama-server.env"}, {"halo-llama-server.service"})
    assert not any(seen["plan"][name][0] or seen["plan"][name][1] for name in ("halo2", "halo3"))
    assert re.search(r'- LLAMA_ARG_CTX_SIZE="?\d+"?\s+\+ LLAMA_ARG_CTX_SIZE="?1024"?', ANSI.sub("", seen["output"]))
    assert "Will restart halo-llama-server.service: /etc/halo-provision/llama-server.env changed" in seen["output"]


def test_a_worker_port_predicts_every_file_and_service_it_touches(cluster, restore):
    seen = check_prediction(cluster, rpc_port="50053")
    files, units = seen["plan"]["halo2"]
    assert {"/etc/halo-provision/rpc-50052.env", "/etc/halo-provision/rpc-50053.env"} <= files
    assert {"halo-rpc@50052.service", "halo-rpc@50053.service"} <= units
    assert "halo-llama-server.service" in seen["plan"]["halo1"][1]  # its --rpc list changed
    assert "Will reload halo-firewall.service" in seen["output"]


def test_a_new_llama_cpp_ref_predicts_the_build_and_every_restart(cluster, restore, tmp_path: Path):
    from bench.build import new_ref_repo
    from lab.llama_source import serve

    repo, tag = new_ref_repo(tmp_path)
    server, port = serve(tmp_path, f"{lab.SUBNET}.1")
    try:
        seen = check_prediction(cluster, llama_cpp_repo=f"http://{lab.SUBNET}.1:{port}/{repo.name}",
                                llama_cpp_ref=tag)
    finally:
        server.shutdown()
        server.server_close()
    for name in HOSTS:  # each RPC server's env file names the build: it restarts on the new one
        assert "halo-rpc@50052.service" in seen["plan"][name][1]
    assert "halo-llama-server.service" in seen["plan"]["halo1"][1]
    assert f"puts a new build of {tag} in place" in seen["output"]
