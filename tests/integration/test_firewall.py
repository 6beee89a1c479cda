"""deploys/firewall.py on the lab hosts: every rule names its RPC server's own address and port, so another
service of a worker stays reachable from a host that is no head; on the head only llama-server's user
(and root) reaches the RPC servers; the unit is hardened; a second run changes nothing.

The RPC servers are stood in for by plain TCP listeners on each worker's RPC address and port (what the
firewall sees is the same); tests/integration/test_rpc_worker.py probes the real servers of the cluster,
and the last test here has llama-server serve through the firewalls."""

from __future__ import annotations

import re

import pytest

from deploys.head import UNIT as HEAD_UNIT
from deploys.head import USER as HEAD_USER
from lab.pyinfra_cli import pyinfra
from tests.integration.conftest import assert_no_changes
from lab import lab

HEAD = "halo1"
PORT = 50052
OTHER_ADDRESS_SUFFIX = 200  # a second address on halo2's cluster-link interface: <subnet>.200
LISTENER = "import socket, sys, time\ns = socket.create_server((sys.argv[1], int(sys.argv[2])))\nwhile True:\n" \
           "    s.accept()[0].close()\n"


def address(name: str) -> str:
    return next(h.address for h in lab.load_hosts() if h.name == name)


def sh(name: str, command: str) -> str:
    return lab.ssh(name, command).stdout.strip()


def connects(source: str, target_address: str, port: int, user: str | None = None) -> bool:
    """A TCP connection from lab host `source`, as `user` (default root), within 3 s."""
    as_user = f"runuser -u {user} -- " if user else ""
    return lab.ssh(source, f"{as_user}timeout 3 bash -c 'exec 3<>/dev/tcp/{target_address}/{port}'",
                   check=False).returncode == 0


def listen(name: str, bind: str, port: int) -> None:
    """A TCP listener on lab host `name` at bind:port (a stand-in RPC server, or another service)."""
    lab.ssh(name, f"cat > /run/halo-test-listener.py <<'PY'\n{LISTENER}PY\n"
                  f"systemd-run --quiet --unit=halo-test-listener-{port}-{bind.replace('.', '-')} --collect "
                  f"python3 /run/halo-test-listener.py {bind} {port}")
    lab.ssh(name, f"for i in $(seq 50); do ss -Hltn | grep -q ' {bind}:{port} ' && exit 0; sleep 0.1; done; exit 1")


@pytest.fixture(scope="module")
def firewalled(lab_session):
    """The lab hosts (halo1 head and worker, halo2 Debian 13, halo3) after deploys/firewall.py, with a
    listener on each worker's RPC address and port."""
    from tests.integration.conftest import LAB_HOSTS

    lab.ensure(lab.parse_host_args(LAB_HOSTS))
    inventory = str(lab.STATE / "inventory.py")
    first = pyinfra(inventory, "deploys/firewall.py")
    assert first.returncode == 0, first.stdout + first.stderr
    for name in ("halo1", "halo2", "halo3"):
        listen(name, address(name), PORT)
    yield inventory
    for name in ("halo1", "halo2", "halo3"):
        lab.ssh(name, "systemctl stop 'halo-test-listener-*' 2>/dev/null", check=False)


def test_a_workers_other_services_stay_reachable_from_a_host_that_is_no_head(firewalled):
    """The old rule dropped the RPC port on every address of the worker (and rpc_port = 22 would have
    locked out SSH); now each rule names the server's own address and port."""
    other = re.sub(r"\.\d+$", f".{OTHER_ADDRESS_SUFFIX}", address("halo2"))
    device = sh("halo2", f"ip -o -4 addr show | awk '$4 ~ /^{re.escape(address('halo2'))}\\// {{print $2}}'")
    lab.ssh("halo2", f"ip addr add {other}/32 dev {device}")
    try:
        listen("halo2", other, PORT)  # the RPC port number, on another address of the worker
        listen("halo2", address("halo2"), 50099)  # another port on the RPC server's own address
        assert connects("halo3", address("halo2"), 22)  # sshd, on the RPC server's address
        assert connects("halo3", other, PORT), f"halo3 cannot reach {other}:{PORT}, which no rule of ours names"
        assert connects("halo3", address("halo2"), 50099)
        assert not connects("halo3", address("halo2"), PORT)  # the RPC server itself: its head only
        assert connects(HEAD, address("halo2"), PORT, user=HEAD_USER)
        rules = [line.strip() for line in sh("halo2", "nft list chain inet halo_provision input").splitlines()
                 if "dport" in line]
        assert rules and all(rule.startswith(f"ip daddr {address('halo2')} tcp dport {PORT} ") for rule in rules), rules
    finally:
        lab.ssh("halo2", f"systemctl stop 'halo-test-listener-{PORT}-{other.replace('.', '-')}' "
                         f"'halo-test-listener-50099-*'; ip addr del {other}/32 dev {device}", check=False)


def test_only_llama_servers_user_and_root_on_the_head_reach_the_rpc_servers(firewalled):
    lab.ssh(HEAD, "id halo-test-user >/dev/null 2>&1 || useradd --system --no-create-home halo-test-user")
    for worker in ("halo2", "halo3"):
        assert connects(HEAD, address(worker), PORT, user=HEAD_USER)
        assert connects(HEAD, address(worker), PORT, user="root")  # root owns the firewall: it could lift any rule
        for user in ("nobody", "halo-test-user"):
            assert not connects(HEAD, address(worker), PORT, user=user), f"{user} on the head reaches {worker}"
    # refused at once (TCP reset), not after a timeout, so a user's tool fails clearly
    probe = lab.ssh(HEAD, f"runuser -u nobody -- timeout 3 bash -c 'exec 3<>/dev/tcp/{address('halo2')}/{PORT}' 2>&1",
                    check=False)
    assert probe.returncode == 1 and "refused" in probe.stdout, probe.stdout
    # another host's users are not the head's business: halo3 is no head, its firewall has no output chain
    assert "chain output" not in sh("halo3", "nft list table inet halo_provision")


@pytest.mark.parametrize("name", ["halo1", "halo2"], ids=["debian12", "debian13"])
def test_systemd_rates_the_firewall_unit_ok_or_better(firewalled, name):
    verdict = sh(name, "systemd-analyze security --no-pager halo-firewall.service | tail -n 1")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", verdict)
    assert match, verdict
    print(f"systemd-analyze security halo-firewall.service on {name}: {match[1]} {match[2]}")
    assert float(match[1]) <= 4.0 and match[2] in ("SAFE", "OK"), verdict
    assert sh(name, "systemctl is-active halo-firewall.service; systemctl is-enabled halo-firewall.service") == \
        "active\nenabled"


def test_second_run_changes_nothing(firewalled):
    assert_no_changes(pyinfra(firewalled, "deploys/firewall.py"))


def test_llama_server_still_serves_through_the_firewalls(cluster):
    lab.ssh(HEAD, f"systemctl restart {HEAD_UNIT}")
    health = "for i in $(seq 120); do curl -sf -m 2 http://{0}:8080/health >/dev/null && exit 0; sleep 1; done; exit 1"
    lab.ssh(HEAD, health.format(address(HEAD)), timeout=180)
    completion = sh(HEAD, f"curl -sf -m 60 http://{address(HEAD)}:8080/completion -H 'Content-Type: application/json' "
                          """-d '{"prompt": "Strix Halo", "n_predict": 4, "ignore_eos": true}'""")
    assert '"tokens_predicted":4' in completion.replace(" ", ""), completion
