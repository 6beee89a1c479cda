"""deploys/firewall.py on the lab cluster (after deploys/full.py): every rule names its RPC server's own
address and port, so another service of a worker stays reachable; on the head only llama-server's user
reaches the RPC servers, and llama-server still serves; the unit is hardened."""

from __future__ import annotations

import re

import pytest

from deploys.head import UNIT as HEAD_UNIT
from deploys.head import USER as HEAD_USER
from tests.integration.conftest import assert_no_changes
from tests.integration.test_rpc_worker import HEAD, PORT, address, can_connect, sh
from tests.lab import lab

OTHER_ADDRESS_SUFFIX = 200  # a second address on halo2's cluster-link interface: 10.151.<lab>.200


@pytest.fixture
def head_server_stopped(cluster):
    """The head's llama-server holds every RPC server (one client at a time): stop it while probing."""
    lab.ssh(HEAD, f"systemctl stop {HEAD_UNIT}")
    yield
    lab.ssh(HEAD, f"systemctl start {HEAD_UNIT}")


def listen(name: str, bind: str, port: int) -> None:
    """A TCP listener on lab host `name`, bind:port, that accepts forever (another service of the host)."""
    lab.ssh(name, f"systemd-run --unit=halo-test-listener-{port} --collect python3 -c "
                  f"'import socket,time\ns=socket.create_server((\"{bind}\", {port}))\n"
                  "while True: s.accept()'")
    lab.ssh(name, f"for i in $(seq 50); do ss -Hltn | grep -q ' {bind}:{port} ' && exit 0; sleep 0.1; done; exit 1")


def test_a_workers_other_services_stay_reachable_from_a_host_that_is_no_head(cluster, head_server_stopped):
    """The old rule dropped the RPC port on every address of the worker (rpc_port = 22 would have locked
    out SSH); now each rule names the server's own address and port."""
    other = re.sub(r"\.\d+$", f".{OTHER_ADDRESS_SUFFIX}", address("halo2"))
    device = sh("halo2", f"ip -o -4 addr show | awk '/ {re.escape(address('halo2'))}\\// {{print $2}}'")
    lab.ssh("halo2", f"ip addr add {other}/32 dev {device}")
    try:
        listen("halo2", other, PORT)  # the RPC port number, on another address of the worker
        listen("halo2", address("halo2"), 50099)  # another port on the RPC server's own address
        assert can_connect("halo3", "halo2", 22)  # sshd, on the RPC server's address
        probe = lab.ssh("halo3", f"timeout 3 bash -c 'exec 3<>/dev/tcp/{other}/{PORT}'", check=False)
        assert probe.returncode == 0, f"halo3 cannot reach {other}:{PORT}, which no rule of ours names"
        assert can_connect("halo3", "halo2", 50099)
        assert not can_connect("halo3", "halo2", PORT)  # the RPC server itself: its head only
        assert can_connect(HEAD, "halo2", PORT)
        rules = sh("halo2", "nft list chain inet halo_provision input")
        assert re.findall(r"tcp dport \d+", rules) and all(
            line.strip().startswith(f"ip daddr {address('halo2')} tcp dport {PORT} ")
            for line in rules.splitlines() if "dport" in line), rules
    finally:
        lab.ssh("halo2", f"systemctl stop halo-test-listener-{PORT} halo-test-listener-50099; "
                         f"ip addr del {other}/32 dev {device}", check=False)


def test_only_llama_servers_user_on_the_head_reaches_the_rpc_servers(cluster, head_server_stopped):
    lab.ssh(HEAD, "id halo-test-user >/dev/null 2>&1 || useradd --system --no-create-home halo-test-user")
    for worker in ("halo2", "halo3"):
        assert can_connect(HEAD, worker, PORT, user=HEAD_USER)
        assert can_connect(HEAD, worker, PORT, user="root")  # root owns the firewall: it could lift any rule
        for user in ("nobody", "halo-test-user"):
            assert not can_connect(HEAD, worker, PORT, user=user), f"{user} on the head reaches {worker}"
    # refused at once (TCP reset), not after a timeout, so a user's tool fails clearly
    probe = lab.ssh(HEAD, f"runuser -u nobody -- bash -c 'exec 3<>/dev/tcp/{address('halo2')}/{PORT}' 2>&1",
                    check=False)
    assert probe.returncode != 0 and "refused" in probe.stdout, probe.stdout
    assert "meta skuid != { 0," in sh(HEAD, "nft list chain inet halo_provision output")  # root and llama-server


def test_llama_server_still_serves_through_the_workers(cluster):
    lab.ssh(HEAD, f"systemctl restart {HEAD_UNIT}")
    health = "for i in $(seq 120); do curl -sf -m 2 http://{0}:8080/health >/dev/null && exit 0; sleep 1; done; exit 1"
    lab.ssh(HEAD, health.format(address(HEAD)), timeout=180)
    completion = sh(HEAD, f"curl -sf -m 60 http://{address(HEAD)}:8080/completion -H 'Content-Type: application/json' "
                          """-d '{"prompt": "Strix Halo", "n_predict": 4, "ignore_eos": true}'""")
    assert '"tokens_predicted":4' in completion.replace(" ", ""), completion


def test_systemd_rates_the_firewall_unit_ok_or_better(cluster):
    verdict = sh("halo2", "systemd-analyze security --no-pager halo-firewall.service | tail -n 1")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", verdict)
    assert match, verdict
    print(f"systemd-analyze security halo-firewall.service (Debian 12): {match[1]} {match[2]}")
    assert float(match[1]) <= 4.0 and match[2] in ("SAFE", "OK"), verdict


def test_second_run_changes_nothing(cluster):
    assert_no_changes(cluster.run("deploys/firewall.py"))
