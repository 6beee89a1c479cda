"""The llama.cpp RPC servers of the workers: running, listening on the cluster link, reachable by the head's
llama-server only: not by another user on the head, another host, or the machine running this suite."""

from __future__ import annotations

import socket

import pytest

from deploys import head as head_step
from deploys.checks import rpc_listen_problems, rpc_unit_problems
from deploys.topology import servers_for
from tests.verify.halo import check

pytestmark = pytest.mark.hosts_in("rpc_workers")

PROBE_TIMEOUT_S = 3


def rpc_facts(halo) -> dict:
    """What verify read of this worker's RPC servers: {"ports": {port: unit}, "units", "listeners"}."""
    return halo.facts.rpc


def connects(prober, address: str, port: int, user: str | None = None) -> bool:
    """Whether `prober` (a testinfra host), as `user` (else as whom the suite logs in), opens a TCP
    connection to address:port within the timeout."""
    as_user = f"runuser -u {user} -- " if user else ""
    return prober.run(f"{as_user}timeout {PROBE_TIMEOUT_S} bash -c '</dev/tcp/{address}/{port}'").rc == 0


def connects_from_here(address: str, port: int) -> bool:
    """Whether the machine running this suite opens a TCP connection to address:port."""
    try:
        with socket.create_connection((address, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def heads_of(halo, all_hosts) -> list:
    """The testinfra hosts of the heads that use this worker's servers (not the worker itself)."""
    return [all_hosts[n] for n in halo.cluster.heads if n in all_hosts and n != halo.name]


def test_rpc_units_are_active(halo):
    rpc = rpc_facts(halo)
    problems = rpc_unit_problems(rpc)
    journals = [f"journalctl -u {unit}:\n" + halo.host.run(f"journalctl -u {unit} -n 15 --no-pager -o short-iso")
                .stdout.rstrip() for unit in rpc["ports"].values() if any(p.startswith(unit + " ") for p in problems)]
    check(not problems, f"{halo.name}: {'; '.join(problems)}: run deploys/rpc_worker.py\n" + "\n".join(journals))


def test_rpc_servers_listen_on_their_bind_address(halo):
    problems = rpc_listen_problems(rpc_facts(halo), halo.settings)
    check(not problems, f"{halo.name}: {'; '.join(problems)} (rpc_bind_address): run deploys/rpc_worker.py")


def test_rpc_ports_are_open_to_the_heads_llama_server(halo, all_hosts):
    """As the head's llama-server user: the head's firewall lets no other user of the head connect."""
    heads = heads_of(halo, all_hosts)
    if not heads:
        pytest.skip("no head besides this worker among --hosts to connect from")
    address = halo.settings.rpc_connect_address
    for head in heads:
        name = halo.cluster.name_of(head)
        if head.run(f"systemctl is-active {head_step.UNIT}").stdout.strip() == "active":
            # it holds each RPC server (one client at a time): a probe would wait in the server's accept
            # queue; that llama-server serves is checked by the head's tests (/health 200)
            continue
        ports = [server.port for server in servers_for(halo.settings, name)]
        closed = [port for port in ports if not connects(head, str(address), port, user=head_step.USER)]
        check(not closed, f"{halo.name}: head {name}'s llama-server cannot connect to {address} port(s) {closed}: "
                          "is the server running (and not busy with another client), and does the firewall accept "
                          "the head's address? run deploys/rpc_worker.py on the workers, deploys/firewall.py on "
                          "the head")


def test_rpc_ports_are_closed_to_other_users_on_the_head(halo, all_hosts):
    """Every user of the head but llama-server's and root (nobody stands for them): the RPC server has
    no authentication."""
    heads = heads_of(halo, all_hosts)
    if not heads:
        pytest.skip("no head besides this worker among --hosts to connect from")
    address = halo.settings.rpc_connect_address
    for head in heads:
        for user in ("nobody",):
            open_ports = [port for port in rpc_facts(halo)["ports"] if connects(head, str(address), port, user=user)]
            check(not open_ports, f"{halo.name}: {user} on head {halo.cluster.name_of(head)} connects to {address} "
                                  f"port(s) {open_ports}: any local user of the head can run code on this GPU; "
                                  "run deploys/firewall.py on the head (only llama-server's user and root may connect)")


def test_rpc_ports_are_closed_to_the_machine_running_this_suite(halo):
    address = halo.settings.rpc_connect_address
    open_ports = [port for port in rpc_facts(halo)["ports"] if connects_from_here(str(address), port)]
    check(not open_ports, f"{halo.name}: this machine ({socket.gethostname()}), which is not a head, connects to "
                          f"{address} port(s) {open_ports}: the firewall must accept only the heads: run "
                          "deploys/firewall.py")


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
