"""The llama.cpp RPC servers of the workers: running, listening on the cluster link, reachable by the head only."""

from __future__ import annotations

import pytest

from deploys.checks import Row
from tests.verify.halo import check, step_module

pytestmark = pytest.mark.hosts_in("rpc_workers")

PROBE_TIMEOUT_S = 3


def units(halo) -> list[tuple[int, str]]:
    """(port, systemd unit) of each RPC server this worker runs: halo-rpc@<port>.service."""
    rpc_worker = step_module("rpc_worker")
    return [(server.port, rpc_worker.UNIT.replace("@", f"@{server.port}")) for server in halo.settings.rpc_servers]


def connects(prober, address: str, port: int) -> bool:
    """Whether `prober` (a testinfra host) opens a TCP connection to address:port within the timeout."""
    result = prober.run(f"timeout {PROBE_TIMEOUT_S} bash -c '</dev/tcp/{address}/{port}'")
    return result.rc == 0


def test_rpc_units_are_active(halo):
    broken = []
    for port, unit in units(halo):
        active = halo.host.run(f"systemctl is-active {unit}").stdout.strip()
        enabled = halo.host.run(f"systemctl is-enabled {unit}").stdout.strip() or "not found"
        if active != "active" or enabled != "enabled":
            journal = halo.host.run(f"journalctl -u {unit} -n 15 --no-pager -o short-iso").stdout.rstrip()
            broken.append(f"{unit} is {active} and {enabled}; its journal ends:\n{journal}")
    check(not broken, f"{halo.name}: " + "\n".join(broken) + "\nrun deploys/rpc_worker.py")


def test_rpc_servers_listen_on_their_bind_address(halo):
    address = halo.settings.rpc_bind_address
    found = {port: halo.host.socket(f"tcp://{address}:{port}").is_listening for port, _ in units(halo)}
    shown = ", ".join(f"{address}:{port}" + ("" if ok else " not listening") for port, ok in found.items())
    halo.record(Row("RPC", shown, "ok" if all(found.values()) else "FAIL"))
    check(all(found.values()), f"{halo.name}: {shown}: the RPC server does not listen on rpc_bind_address; "
                               "run deploys/rpc_worker.py")


def test_rpc_ports_are_open_to_the_head(halo, all_hosts):
    heads = [all_hosts[n] for n in halo.cluster.heads if n in all_hosts]
    if not heads:
        pytest.skip("no head among --hosts to connect from")
    address = halo.settings.rpc_bind_address
    closed = [port for port, _ in units(halo) if not connects(heads[0], str(address), port)]
    check(not closed, f"{halo.name}: the head cannot connect to {address} port(s) {closed}: is the server "
                      "running, and does the firewall accept the head's address? run deploys/rpc_worker.py")


def test_rpc_ports_are_closed_to_other_addresses(halo, all_hosts):
    """From a host that is not a head (nor this worker): the RPC server has no authentication."""
    others = [h for n, h in all_hosts.items() if n not in halo.cluster.heads and n != halo.name]
    if not others:
        pytest.skip("no host besides the heads and this worker among --hosts to probe from")
    address = halo.settings.rpc_bind_address
    prober = others[0]
    listening = [port for port, _ in units(halo) if halo.host.socket(f"tcp://{address}:{port}").is_listening]
    if not listening:
        pytest.fail(f"{halo.name}: no RPC server listens, so the firewall cannot be checked "
                    "(see test_rpc_servers_listen_on_their_bind_address)", pytrace=False)
    open_ports = [port for port in listening if connects(prober, str(address), port)]
    check(not open_ports, f"{halo.name}: {prober.backend.get_hostname()} (not a head) connects to {address} "
                          f"port(s) {open_ports}: anyone on the link can run code on this GPU; the firewall must "
                          "accept only the heads: run deploys/rpc_worker.py")
