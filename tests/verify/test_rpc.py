"""The llama.cpp RPC servers of the workers: running, listening on the cluster link, reachable by the head only."""

from __future__ import annotations

import pytest

from deploys.verify import rpc_listen_problems, rpc_unit_problems
from tests.verify.halo import check, step_module

pytestmark = pytest.mark.hosts_in("rpc_workers")

PROBE_TIMEOUT_S = 3


def rpc_facts(halo) -> dict:
    """What verify read of this worker's RPC servers: {"ports": {port: unit}, "units", "listeners"}."""
    step_module("rpc_worker")
    return halo.facts.rpc


def connects(prober, address: str, port: int) -> bool:
    """Whether `prober` (a testinfra host) opens a TCP connection to address:port within the timeout."""
    return prober.run(f"timeout {PROBE_TIMEOUT_S} bash -c '</dev/tcp/{address}/{port}'").rc == 0


def test_rpc_units_are_active(halo):
    rpc = rpc_facts(halo)
    problems = rpc_unit_problems(rpc)
    journals = [f"journalctl -u {unit}:\n" + halo.host.run(f"journalctl -u {unit} -n 15 --no-pager -o short-iso")
                .stdout.rstrip() for unit in rpc["ports"].values() if any(p.startswith(unit + " ") for p in problems)]
    check(not problems, f"{halo.name}: {'; '.join(problems)}: run deploys/rpc_worker.py\n" + "\n".join(journals))


def test_rpc_servers_listen_on_their_bind_address(halo):
    problems = rpc_listen_problems(rpc_facts(halo), halo.settings)
    check(not problems, f"{halo.name}: {'; '.join(problems)} (rpc_bind_address): run deploys/rpc_worker.py")


def test_rpc_ports_are_open_to_the_head(halo, all_hosts):
    ports = rpc_facts(halo)["ports"]
    heads = [all_hosts[n] for n in halo.cluster.heads if n in all_hosts]
    if not heads:
        pytest.skip("no head among --hosts to connect from")
    address = halo.settings.rpc_bind_address
    closed = [port for port in ports if not connects(heads[0], str(address), port)]
    check(not closed, f"{halo.name}: the head cannot connect to {address} port(s) {closed}: is the server "
                      "running, and does the firewall accept the head's address? run deploys/rpc_worker.py")


def test_rpc_ports_are_closed_to_other_addresses(halo, all_hosts):
    """From a host that is not a head (nor this worker): the RPC server has no authentication."""
    rpc = rpc_facts(halo)
    others = [h for n, h in all_hosts.items() if n not in halo.cluster.heads and n != halo.name]
    if not others:
        pytest.skip("no host besides the heads and this worker among --hosts to probe from")
    check(not rpc_listen_problems(rpc, halo.settings),
          f"{halo.name}: no RPC server listens, so the firewall cannot be checked "
          "(see test_rpc_servers_listen_on_their_bind_address)")
    address, prober = halo.settings.rpc_bind_address, others[0]
    open_ports = [port for port in rpc["ports"] if connects(prober, str(address), port)]
    check(not open_ports, f"{halo.name}: {prober.backend.get_hostname()} (not a head) connects to {address} "
                          f"port(s) {open_ports}: anyone on the link can run code on this GPU; the firewall must "
                          "accept only the heads: run deploys/rpc_worker.py")
