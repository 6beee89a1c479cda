"""deploys/full.py on the lab cluster as a whole: a no-change rerun, a changed worker port, a rebooted worker."""

from __future__ import annotations

import time

from tests.integration.conftest import assert_no_changes, inventory_with
from tests.integration.test_cluster_faults import completes
from tests.integration.test_rpc_worker import HEAD, PORT, can_connect, process_of, sh, without_halo3_as_worker
from lab import lab


def head_process() -> str:
    return sh(HEAD, "systemctl show -p MainPID -p ActiveEnterTimestamp halo-llama-server.service")


def test_a_second_run_of_full_changes_nothing(cluster):
    assert_no_changes(cluster.run("deploys/full.py"))


def test_a_new_port_on_one_worker_restarts_that_worker_and_the_head_only(cluster, tmp_path):
    halo2, head = process_of("halo2"), head_process()
    moved = inventory_with(tmp_path, halo3={"rpc_port": 50072})
    try:
        proc = cluster.run("deploys/full.py", inventory=moved)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert process_of("halo2") == halo2, "halo2's RPC server must not restart"
        assert head_process() != head, "the head must restart with the new --rpc list"
        env = sh(HEAD, "cat /etc/halo-provision/llama-server.env")
        assert f"{lab.SUBNET}.13:50072" in env and f"{lab.SUBNET}.13:{PORT}" not in env
        assert sh("halo3", "systemctl is-active halo-rpc@50072") == "active"
        assert can_connect(HEAD, "halo3", 50072) and not can_connect("halo2", "halo3", 50072)
        assert_no_changes(cluster.run("deploys/full.py", inventory=moved))
    finally:
        back = cluster.run("deploys/full.py")
    assert back.returncode == 0, back.stdout + back.stderr
    assert sh("halo3", f"systemctl is-active halo-rpc@{PORT}") == "active"


def test_after_a_worker_reboots_it_serves_again_and_its_port_is_still_closed_to_others(cluster):
    lab.restart_host("halo2")  # power cycle: the container's systemd boots again from its disk
    deadline = time.monotonic() + 60
    while lab.ssh("halo2", f"systemctl is-active halo-rpc@{PORT}", check=False).stdout.strip() != "active":
        assert time.monotonic() < deadline, "halo-rpc did not come back after the reboot"
        time.sleep(1)
    assert can_connect(HEAD, "halo2")
    assert not can_connect("halo3", "halo2")
    assert "tcp dport 50052 ip saddr" in sh("halo2", "nft list table inet halo_provision")
    # llama.cpp's RPC client does not reconnect to a worker that went away: the head's next request
    # aborts llama-server, systemd starts it again, and it serves through the worker again by itself
    # (until then verify's "RPC links" row fails, naming the lost link: a run before it would fail)
    deadline = time.monotonic() + 120
    while not completes():
        assert time.monotonic() < deadline, "the head did not serve again after its worker rebooted"
        time.sleep(1)
    assert_no_changes(cluster.run("deploys/full.py"))


def test_a_host_taken_out_of_rpc_workers_is_cleaned_up_and_no_longer_expected(cluster, tmp_path):
    """halo3 leaves group rpc_workers (it stays in the inventory, in another group): its RPC server is
    stopped and disabled, its env file gone, its firewall (table, unit, rules) removed, the head no
    longer uses it, verify passes without it; a second run changes nothing; back in rpc_workers it
    serves again."""
    spare = without_halo3_as_worker(tmp_path)
    try:
        proc = cluster.run("deploys/full.py", inventory=spare)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert lab.ssh("halo3", f"systemctl is-enabled halo-rpc@{PORT}; systemctl is-active halo-rpc@{PORT}",
                       check=False).stdout.split() == ["disabled", "inactive"]
        assert f":{PORT}" not in sh("halo3", "ss -Hltn")
        assert sh("halo3", "ls /etc/halo-provision | grep '^rpc-' || true") == ""
        # no role left: its firewall table, unit and rules are gone too
        assert lab.ssh("halo3", "nft list table inet halo_provision", check=False).returncode != 0
        assert sh("halo3", "systemctl is-enabled halo-firewall.service 2>&1 || true") != "enabled"
        assert sh("halo3", "ls /etc/systemd/system/halo-firewall.service /etc/halo-provision/firewall.nft "
                           "2>/dev/null || true") == ""
        assert f"{lab.SUBNET}.13" not in sh(HEAD, "cat /etc/halo-provision/llama-server.env")
        assert completes()
        verify = cluster.run("deploys/verify.py", inventory=spare)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert_no_changes(cluster.run("deploys/full.py", inventory=spare))
    finally:
        back = cluster.run("deploys/full.py")
    assert back.returncode == 0, back.stdout + back.stderr
    assert sh("halo3", f"systemctl is-active halo-rpc@{PORT}") == "active"
    assert sh("halo3", "systemctl is-active halo-firewall.service") == "active"
    assert can_connect(HEAD, "halo3") and not can_connect("halo2", "halo3")
