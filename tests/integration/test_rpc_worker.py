"""deploys/rpc_worker.py on the lab cluster (after deploys/full.py): the real llama.cpp RPC servers
under their hardened units, the firewall, idempotence and restarts of only what changed."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from deploys.head import UNIT as HEAD_UNIT
from deploys.head import USER as HEAD_USER
from lab import lab
from lab.pyinfra_cli import results
from lab.tiny_model import write_tiny_model
from tests.integration.conftest import assert_no_changes, inventory_with

WORKERS = ("halo1", "halo2", "halo3")
HEAD = "halo1"
PORT = 50052


@pytest.fixture(scope="module", autouse=True)
def head_server_stopped(cluster):
    """An RPC server serves one client at a time and the head's llama-server holds them all: the
    connections these tests open would wait in full accept queues. Stop it meanwhile, then restart it."""
    active = lab.ssh(HEAD, f"systemctl is-active {HEAD_UNIT}", check=False).stdout.strip() == "active"
    if active:
        lab.ssh(HEAD, f"systemctl stop {HEAD_UNIT}")
    yield
    if active:
        started = lab.ssh(HEAD, f"systemctl start {HEAD_UNIT}", check=False, timeout=240)
        assert started.returncode == 0, (started.stderr + lab.ssh(
            HEAD, f"journalctl -u {HEAD_UNIT} -n 30 --no-pager -o cat", check=False).stdout + "".join(
            lab.ssh(w, "systemctl is-active halo-rpc@50052; ss -Hltn; nft list ruleset", check=False).stdout
            for w in ("halo2", "halo3")))


def address(name: str) -> str:
    return next(h.address for h in lab.load_hosts() if h.name == name)


def sh(name: str, command: str) -> str:
    return lab.ssh(name, command).stdout.strip()


def can_connect(source: str, target: str, port: int = PORT, user: str | None = None) -> bool:
    """A TCP connection from lab host `source` to target:port within 3 s (bash's /dev/tcp), as `user`
    (default: root; on the head llama-server's user, as the head's firewall lets no other user connect)."""
    user = user or (HEAD_USER if source == HEAD else None)
    as_user = f"runuser -u {user} -- " if user else ""
    probe = lab.ssh(source, f"{as_user}timeout 3 bash -c 'exec 3<>/dev/tcp/{address(target)}/{port}'", check=False)
    return probe.returncode == 0


def process_of(name: str, port: int = PORT) -> tuple[str, str]:
    """(MainPID, ActiveEnterTimestamp) of halo-rpc@port: both change when the unit restarts."""
    show = sh(name, f"systemctl show -p MainPID -p ActiveEnterTimestamp halo-rpc@{port}.service")
    values = dict(line.split("=", 1) for line in show.splitlines())
    return values["MainPID"], values["ActiveEnterTimestamp"]


def test_servers_run_hardened_and_listen_on_their_address(cluster):
    for name in WORKERS:
        assert sh(name, f"systemctl is-active halo-rpc@{PORT}.service halo-firewall.service") == "active\nactive"
        assert sh(name, f"systemctl is-enabled halo-rpc@{PORT}.service halo-firewall.service") == "enabled\nenabled"
        listening = sh(name, "ss -Hltn")
        assert re.search(rf"\s{re.escape(address(name))}:{PORT}\s", listening), listening
        pid, _ = process_of(name)
        user, groups = sh(name, f"ps -o user:32=,supgrp:200= -p {pid}").split(None, 1)
        assert user == "llama-rpc" and {"render", "video"} <= set(groups.split(","))
        # the real ggml-rpc-server of the build, with its tensor cache in the state directory
        assert sh(name, f"readlink /proc/{pid}/exe").endswith("/bin/ggml-rpc-server")
        assert sh(name, "stat -c %U /var/lib/halo-rpc/rpc") == "llama-rpc"


def run_model_through(endpoints: list[str], tmp_path: Path) -> str:
    """Run llama-server on the head with the tiny model on these RPC servers, complete 8 tokens; its log.
    It runs as llama-server's user: the head's firewall lets no other user reach the RPC servers.

    """
    model = write_tiny_model(tmp_path / "tiny.gguf").read_bytes()
    subprocess.run(["ssh", "-F", str(lab.STATE / "ssh_config"), HEAD, "cat > /tmp/rpc-test.gguf"],
                   input=model, check=True, timeout=60)
    script = f"""
setpriv --reuid={HEAD_USER} --regid={HEAD_USER} --init-groups \\
    /opt/llama.cpp/current/bin/llama-server -m /tmp/rpc-test.gguf --rpc {",".join(endpoints)} -ngl 99 -c 256 \\
    -lv 4 --host 127.0.0.1 --port 8099 > /tmp/rpc-test.log 2>&1 &
pid=$!
python3 - <<'PY'
import json, time, urllib.request
for _ in range(120):
    try:
        urllib.request.urlopen("http://127.0.0.1:8099/health")
        break
    except OSError:
        time.sleep(0.5)
request = urllib.request.Request("http://127.0.0.1:8099/completion", headers={{"Content-Type": "application/json"}},
                                 data=json.dumps({{"prompt": "Strix Halo", "n_predict": 8, "ignore_eos": True}}).encode())
print("tokens:", json.loads(urllib.request.urlopen(request, timeout=60).read())["tokens_predicted"])
PY
kill $pid; wait $pid; grep -E "offloaded|using device RPC" /tmp/rpc-test.log; rm -f /tmp/rpc-test.gguf /tmp/rpc-test.log
"""
    return lab.ssh(HEAD, script, timeout=180).stdout


def test_systemd_rates_the_unit_ok_or_better(cluster):
    verdict = sh("halo2", f"systemd-analyze security --no-pager halo-rpc@{PORT}.service | tail -n 1")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", verdict)
    assert match, verdict
    print(f"systemd-analyze security halo-rpc@{PORT}.service: {match[1]} {match[2]}")
    assert match[2] in ("SAFE", "OK"), verdict


def test_second_run_changes_nothing(cluster):
    assert_no_changes(cluster.run("deploys/rpc_worker.py"))


def test_rpc_port_accepts_the_head_only_and_survives_a_firewall_restart(cluster):
    for attempt in ("loaded by the deploy", "after systemctl restart halo-firewall"):
        assert can_connect(HEAD, "halo2") and can_connect(HEAD, "halo3"), attempt
        assert not can_connect("halo3", "halo2"), attempt
        assert not can_connect("halo2", "halo1"), attempt
        lab.ssh("halo2", "systemctl restart halo-firewall.service")
        lab.ssh("halo1", "systemctl restart halo-firewall.service")
    assert "tcp dport 50052 ip saddr" in sh("halo2", "nft list table inet halo_provision")


def test_changing_one_workers_servers_restarts_only_that_worker(cluster, tmp_path):
    before = {name: process_of(name) for name in ("halo1", "halo3")}
    instances = [{"port": 50062, "device": "CPU", "threads": 1}, {"port": 50063}]
    moved = inventory_with(tmp_path, halo2={"rpc_instances": instances})
    try:
        proc = cluster.run("deploys/rpc_worker.py", inventory=moved)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        changed = {op for op, r in results(proc).items() if r["success"]}
        assert any("Stop the RPC servers no longer in rpc_instances" in op for op in changed), changed

        assert {name: process_of(name) for name in ("halo1", "halo3")} == before
        assert sh("halo2", "systemctl is-active halo-rpc@50062 halo-rpc@50063") == "active\nactive"
        assert lab.ssh("halo2", f"systemctl is-active halo-rpc@{PORT}", check=False).stdout.strip() != "active"
        assert sh("halo2", f"ls /etc/halo-provision; systemctl is-enabled halo-rpc@{PORT} || true").split() == [
            "firewall.nft", "rpc-50062.env", "rpc-50063.env", "disabled"]
        pid, _ = process_of("halo2", 50062)
        assert sh("halo2", f"tr '\\0' ' ' < /proc/{pid}/cmdline").endswith(
            f"-H {address('halo2')} -p 50062 -c -d CPU -t 1")
        for port in (50062, 50063):
            assert can_connect(HEAD, "halo2", port) and not can_connect("halo3", "halo2", port)
        # the real server works in the unit's sandbox (seccomp filter, device policy, read-only system):
        # the head offloads every layer of a model to the two new servers and completes text
        endpoints = [f"{address('halo2')}:{port}" for port in (50062, 50063)]
        log = run_model_through(endpoints, tmp_path)
        assert "tokens: 8" in log and re.search(r"offloaded (\d+)/\1 layers", log), log
        for i, endpoint in enumerate(endpoints):
            assert f"using device RPC{i} ({endpoint})" in log, log
        assert_no_changes(cluster.run("deploys/rpc_worker.py", inventory=moved))
    finally:
        back = cluster.run("deploys/rpc_worker.py")
    assert back.returncode == 0, back.stdout + back.stderr
    assert sh("halo2", f"systemctl is-active halo-rpc@{PORT}") == "active"
    assert sh("halo2", "ls /etc/halo-provision").split() == ["firewall.nft", f"rpc-{PORT}.env"]
    assert {name: process_of(name) for name in ("halo1", "halo3")} == before


def accepts(source: str, target_address: str, port: int = PORT) -> bool:
    """A TCP connection from lab host `source` to target_address:port within 3 s."""
    probe = lab.ssh(source, f"timeout 3 bash -c 'exec 3<>/dev/tcp/{target_address}/{port}'", check=False)
    return probe.returncode == 0


def serves_within(seconds: float, target_address: str) -> bool:
    """The head can connect to target_address:PORT within `seconds`."""
    deadline = time.monotonic() + seconds
    while not accepts(HEAD, target_address):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_a_worker_whose_address_comes_up_late_serves_by_itself(cluster, tmp_path):
    """The cluster link gets its address after the RPC server started (a USB4/Thunderbolt link at
    boot): ggml-rpc-server cannot bind and exits with status 0; systemd starts it again until the
    address is there, and it serves within 15 s of the address coming back, with no run of ours."""
    name, worker = "halo2", lab.running_host("halo2")
    link = f"{lab.SUBNET}.112"  # a second address of halo2, its cluster-link address in this test
    ip = ("ip", "-n", worker.netns, "addr")  # from outside, as a link going down and up
    lab.run(*ip, "add", f"{link}/24", "dev", "eth0")
    moved = tmp_path / "inventory.py"  # halo2's rpc_bind_address replaced (inventory_with would add a second one)
    moved.write_text((lab.STATE / "inventory.py").read_text().replace(
        f"'rpc_bind_address': '{worker.address}'", f"'rpc_bind_address': '{link}'"))
    moved = str(moved)
    unit = f"halo-rpc@{PORT}.service"
    try:
        proc = cluster.run("deploys/rpc_worker.py", inventory=moved)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert serves_within(15, link), sh(name, f"ss -Hltn; journalctl -u {unit} -n 20 --no-pager -o cat")

        lab.run(*ip, "del", f"{link}/24", "dev", "eth0")
        lab.ssh(name, f"systemctl restart {unit}")
        restarts = int(sh(name, f"systemctl show -p NRestarts --value {unit}"))
        time.sleep(7)  # it fails to bind and exits with 0 several times
        assert int(sh(name, f"systemctl show -p NRestarts --value {unit}")) >= restarts + 2
        assert sh(name, f"systemctl is-failed {unit} || true") != "failed"
        assert "Failed to create server socket" in sh(name, f"journalctl -u {unit} -n 20 --no-pager -o cat")
        assert not accepts(HEAD, link)

        lab.run(*ip, "add", f"{link}/24", "dev", "eth0")
        back = time.monotonic()
        assert serves_within(15, link), f"{unit} did not serve within 15 s of its address coming back"
        print(f"halo-rpc@{PORT} accepted the head {time.monotonic() - back:.1f} s after its address came back")
        assert not accepts("halo3", link)  # still behind its firewall
        assert_no_changes(cluster.run("deploys/rpc_worker.py", inventory=moved))
    finally:
        lab.run(*ip, "add", f"{link}/24", "dev", "eth0", check=False)
        restored = cluster.run("deploys/rpc_worker.py")
        lab.run(*ip, "del", f"{link}/24", "dev", "eth0", check=False)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert can_connect(HEAD, name)
    live = sh(name, "nft list table inet halo_provision")  # the rules loaded, not only written
    assert f"ip daddr {worker.address} tcp dport {PORT}" in live and link not in live, live


def test_a_new_build_restarts_the_server(cluster):
    """A new build id (what a new llama.cpp build brings) restarts the instance, once."""
    name = "halo2"
    before = process_of(name)
    stamp = sh(name, "readlink -f /opt/llama.cpp/current")
    build_id = Path(stamp).name
    new = f"{stamp}-copy"
    lab.ssh(name, f"cp -a {stamp} {new} && sed -i 's/{build_id}/{build_id}-copy/g' {new}/halo-build.json"
                  f" && ln -sfn {new} /opt/llama.cpp/current")
    try:
        proc = cluster.run("deploys/rpc_worker.py")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert process_of(name) != before
        assert sh(name, "grep LLAMA_BUILD_ID /etc/halo-provision/rpc-50052.env") == f"LLAMA_BUILD_ID={build_id}-copy"
        assert_no_changes(cluster.run("deploys/rpc_worker.py"))
    finally:
        lab.ssh(name, f"ln -sfn {stamp} /opt/llama.cpp/current && rm -rf {new}")
        cluster.run("deploys/rpc_worker.py")


def apt_install(name: str, packages: str) -> None:
    lab.ssh(name, f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
                  f"-o DPkg::Lock::Timeout=120 {packages} >/dev/null", timeout=600)


def changed_on(proc, operation: str) -> int:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return sum(r["success"] for op, r in results(proc).items() if op.endswith(f"| {operation}"))


def without_halo3_as_worker(tmp_path: Path) -> str:
    """The lab inventory with halo3 moved from rpc_workers to a group of its own."""
    lines = (lab.STATE / "inventory.py").read_text().splitlines()
    (entry,) = [line for line in lines if line.strip().startswith("('halo3', {")]
    spare = tmp_path / "inventory.py"
    spare.write_text("\n".join(line for line in lines if line != entry) + f"\nspare = [\n{entry}\n]\n")
    return str(spare)


def test_ufw_on_a_worker_gets_a_rule_for_the_head(cluster, tmp_path):
    """ufw's own default deny drops the head too; the step adds an allow rule for it, once, and takes
    it out when the host leaves rpc_workers."""
    apt_install("halo3", "ufw")
    try:
        lab.ssh("halo3", "ufw allow 22/tcp && ufw --force enable")
        assert not can_connect(HEAD, "halo3")
        assert changed_on(cluster.run("deploys/rpc_worker.py"), "Allow the heads to the RPC ports in ufw") == 1
        rule = f"ufw allow from {address(HEAD)} to any port {PORT} proto tcp comment 'halo-provision'"
        assert rule in sh("halo3", "ufw show added").splitlines()
        assert can_connect(HEAD, "halo3") and not can_connect("halo2", "halo3")
        assert_no_changes(cluster.run("deploys/rpc_worker.py"))
        # halo3 leaves rpc_workers: the rule goes with its RPC server
        out = cluster.run("deploys/rpc_worker.py", inventory=without_halo3_as_worker(tmp_path))
        assert changed_on(out, "Remove the RPC ports from ufw") == 1
        assert "halo-provision" not in sh("halo3", "ufw show added")
    finally:
        cluster.run("deploys/rpc_worker.py")
        lab.ssh("halo3", "ufw --force reset >/dev/null; ufw --force disable; "
                         "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q ufw >/dev/null", check=False)


def firewalld_run_admits_the_head_in(cluster, zone: str, other_zone: str) -> None:
    """rpc_worker.py closes halo3 to the head until it runs, then adds the head's rule in `zone` (not in
    `other_zone`) in one change: the head connects, halo2 does not; a second run changes nothing."""
    assert not can_connect(HEAD, "halo3")
    proc = cluster.run("deploys/rpc_worker.py")
    assert changed_on(proc, "Allow the heads to the RPC ports in firewalld") == 1
    assert sh("halo3", f"firewall-cmd --zone={zone} --list-rich-rules") == (
        f'rule family="ipv4" source address="{address(HEAD)}" service name="halo-rpc" accept')
    assert sh("halo3", f"firewall-cmd --zone={other_zone} --list-rich-rules") == ""
    assert f"ports: {PORT}/tcp" in sh("halo3", "firewall-cmd --info-service=halo-rpc")  # the running config
    assert can_connect(HEAD, "halo3") and not can_connect("halo2", "halo3")
    assert_no_changes(cluster.run("deploys/rpc_worker.py"))


def test_firewalld_on_a_worker_gets_a_rich_rule_for_the_head(cluster):
    """firewalld's zones reject the head too; the step adds service halo-rpc and a rich rule, once, in the
    zone of the interface carrying rpc_bind_address: the default zone while it is in none, else its own."""
    apt_install("halo3", "firewalld")
    try:
        assert sh("halo3", "firewall-cmd --state; firewall-cmd --get-default-zone") == "running\npublic"
        firewalld_run_admits_the_head_in(cluster, "public", "work")
        # the cluster link in a zone of its own (as Fedora Server does with NetworkManager connections):
        # the default zone's rule no longer applies to it; the step moves the rule to that zone
        lab.ssh("halo3", "firewall-cmd -q --permanent --zone=work --add-interface=eth0 && firewall-cmd -q --reload")
        assert sh("halo3", "firewall-cmd --get-zone-of-interface=eth0") == "work"
        firewalld_run_admits_the_head_in(cluster, "work", "public")
    finally:
        lab.ssh("halo3", "systemctl disable --now firewalld; DEBIAN_FRONTEND=noninteractive apt-get purge -y -q "
                         "firewalld >/dev/null; rm -rf /etc/firewalld", check=False)
