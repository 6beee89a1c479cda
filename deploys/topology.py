"""The cluster's topology, in one place: who is head and who is RPC worker, which RPC servers each
head connects to (its --rpc list), whom each worker's firewall lets in, who builds llama.cpp and who
gets a copy, and the rules across hosts that keep all that sound (checked once per run with the
settings, before any change).

    >>> from pyinfra.api import Inventory
    >>> from deploys.settings import validate_inventory
    >>> inventory = Inventory(([("halo1", {"rpc_bind_address": "10.151.0.11"}),
    ...                         ("halo2", {"rpc_bind_address": "10.151.0.12"})], {}),
    ...                       head=(["halo1"], {}), rpc_workers=(["halo1", "halo2"], {}))
    >>> valid = validate_inventory(inventory)
    >>> rpc_list(valid["halo1"], [valid["halo1"], valid["halo2"]])
    ['10.151.0.12:50052']
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from deploys.settings import HEAD_GROUP, RPC_WORKERS_GROUP, IPAddress, RpcInstance, Settings, masked, settings
from deploys.settings.fields import endpoint, unscoped
from deploys.settings.provenance import DEFAULT_FIX

if TYPE_CHECKING:
    from pyinfra.api import Inventory


# -- heads and workers -----------------------------------------------------------------------------

def heads_of(inventory: Inventory) -> list[Settings]:
    """Settings of the hosts in group head, in the group's order."""
    return [settings(h) for h in inventory.get_group(HEAD_GROUP, [])]


def workers_of(inventory: Inventory) -> list[Settings]:
    """Settings of the hosts in group rpc_workers, in the group's order (the --rpc list's order)."""
    return [settings(w) for w in inventory.get_group(RPC_WORKERS_GROUP, [])]


# -- what each head connects to --------------------------------------------------------------------

def servers_for(worker: Settings, head: str) -> list[RpcInstance]:
    """The RPC servers of `worker` that head `head` uses: those for every head or for `head`; none on
    the head itself (llama-server uses its own GPU directly)."""
    if head == worker.host_name:
        return []
    return [server for server in worker.rpc_servers if server.head in (None, head)]


def endpoints_for(worker: Settings, head: str) -> list[str]:
    """'address:port' of the RPC servers of `worker` that head `head` uses."""
    address = worker.rpc_connect_address
    if address is None:
        return []
    return [endpoint(address, server.port) for server in servers_for(worker, head)]


def rpc_list(head: Settings, workers: list[Settings]) -> list[str]:
    """The --rpc list of `head`: the RPC endpoints it uses of every worker, in the order of `workers`
    (workers_of: the inventory's), each worker's rpc_instances in their order; never the head's own."""
    return [found for w in workers for found in endpoints_for(w, head.host_name)]


# -- whom the workers' firewalls let in ------------------------------------------------------------

def heads_using(worker: Settings, server: RpcInstance, heads: list[Settings]) -> list[Settings]:
    """The heads (of `heads`) that connect to RPC server `server` of `worker`: its firewall admits them."""
    return [h for h in heads if server in servers_for(worker, h.host_name)]


def firewall_sources(inventory: Inventory) -> list[IPAddress]:
    """Every head's head_source_address (the address its connections come from), IPv4 first."""
    found = {h.head_source_address for h in heads_of(inventory)}
    return sorted((a for a in found if a is not None), key=lambda a: (a.version, a))


def route_problems(head: Settings, workers: list[Settings], routes: dict[str, str]) -> list[str]:
    """The head's routes to the RPC workers it uses (`routes`: facts.network.RouteSources on the head)
    leave from another address than the one their firewalls admit (head_source_address): refused.

    >>> from pyinfra.api import Inventory
    >>> from deploys.settings import validate_inventory
    >>> valid = validate_inventory(Inventory(([("h", {"ssh_hostname": "192.168.1.4"}),
    ...     ("w", {"rpc_bind_address": "10.151.0.12"})], {}), head=(["h"], {}), rpc_workers=(["w"], {})))
    >>> route_problems(valid["h"], [valid["w"]], {"10.151.0.12": "192.168.1.4"})
    []
    >>> print(route_problems(valid["h"], [valid["w"]], {"10.151.0.12": "10.151.0.11"})[0])  # doctest: +ELLIPSIS
    h: rpc_bind_address = None is invalid: the RPC workers' firewalls admit head h from 192.168.1.4 (its ssh_hostname), but h's route to w (10.151.0.12) leaves from 10.151.0.11, so w would refuse it; expected h's address toward the workers, '10.151.0.11'. Fix it in the inventory's host data of h.
    """
    source = head.head_source_address
    if source is None:
        return []
    origin = ("rpc_bind_address" if head.rpc_bind_address is not None else
              "head_bind_address" if head.head_bind_address == source else "ssh_hostname")
    refused: dict[str, list[str]] = {}
    for worker in workers:
        address = worker.rpc_connect_address
        if address is None or not servers_for(worker, head.host_name):
            continue
        got = routes.get(str(unscoped(address)))
        if got is not None and ipaddress.ip_address(got) != unscoped(source):
            refused.setdefault(got, []).append(f"{worker.host_name} ({address})")
    return [head._problem(
        "rpc_bind_address", f"the RPC workers' firewalls admit head {head.host_name} from {source} (its {origin}), "
        f"but {head.host_name}'s route to {' and '.join(names)} leaves from {got}, so "
        f"{'they' if len(names) > 1 else names[0].split()[0]} would refuse it; expected {head.host_name}'s address "
        f"toward the workers, {got!r}",
        fix=None if head.rpc_bind_address is not None else f"the inventory's host data of {head.host_name}")
        for got, names in refused.items()]


# -- who builds llama.cpp and who gets a copy ------------------------------------------------------

@dataclass
class Plan:
    """Who builds and who copies, for one group of hosts with the same distro, backend and flags."""

    key: str
    builder: str
    wanted_commit: str | None  # None: the build host does not know the ref yet (first run)
    up_to_date: set[str] = field(default_factory=set)
    members: list[str] = field(default_factory=list)

    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])  # this run's copy, never an older one

    def waiting(self) -> list[str]:
        """Hosts of the group that take a copy of the builder's build."""
        return [n for n in self.members if n != self.builder and n not in self.up_to_date]


def build_plans(hosts: dict[str, dict]) -> dict[str, Plan]:
    """{host: its group's plan} from {host: {"key", "flags", "wanted", "current", "once"}} in inventory
    order: with llama_cpp_build_once, the first host of each key builds and the others copy its build.

    >>> plans = build_plans({"a": {"key": "k", "flags": [], "wanted": "c1", "current": None, "once": True},
    ...                      "b": {"key": "k", "flags": [], "wanted": "c1", "current": None, "once": True}})
    >>> plans["b"].builder, plans["a"].waiting()
    ('a', ['b'])
    """
    plans: dict[str, Plan] = {}
    groups: dict[str, Plan] = {}
    for name, h in hosts.items():
        if h["once"] and h["key"] in groups:  # a copy: up to date when it has the builder's commit
            plan = groups[h["key"]]
            plan.members.append(name)
        else:  # a builder: up to date when its clone's commit for the ref is the one it serves
            plan = Plan(h["key"], name, h["wanted"], members=[name])
            if h["once"]:
                groups[h["key"]] = plan
        current = h["current"]
        if plan.wanted_commit and current and current["commit"] == plan.wanted_commit \
                and current["flags"] == h["flags"]:
            plan.up_to_date.add(name)
        plans[name] = plan
    return plans


# -- rules across hosts ----------------------------------------------------------------------------

def _addresses_of(s: Settings) -> set[IPAddress]:
    """The host's own specific addresses the data names: rpc_bind_address, head_bind_address, ssh_hostname."""
    found = {s.rpc_bind_address, s.head_bind_address}
    try:
        found.add(ipaddress.ip_address(str(s._ssh_hostname)))
    except ValueError:
        pass
    return {a for a in found if a is not None and not (a.is_unspecified or a.is_loopback)}


def cross_host_problems(inventory: Inventory, valid: dict[str, Settings]) -> list[str]:
    problems: list[str] = []
    workers = [valid[h.name] for h in inventory if h.name in valid and RPC_WORKERS_GROUP in h.groups]
    all_workers = [h.name for h in inventory if RPC_WORKERS_GROUP in h.groups]
    heads = [h.name for h in inventory if HEAD_GROUP in h.groups]

    # Every worker binds its RPC server to its own cluster-link address.
    for s in workers:
        if s.rpc_bind_address is None:
            problems.append(
                s._problem(
                    "rpc_bind_address",
                    f"{s.host_name} is in group {RPC_WORKERS_GROUP}, so it needs the address of its "
                    "cluster-link interface, e.g. '10.151.0.12'; expected an IPv4 or IPv6 address",
                    fix=f"the inventory's host data of {s.host_name}",
                )
            )

    # ... where the heads on other hosts reach it: not loopback, and not a head's own address
    # (that head's --rpc list would name the head itself, where no RPC server listens).
    heads_valid = [valid[name] for name in heads if name in valid]
    for s in workers:
        address = s.rpc_bind_address
        others = [h for h in heads_valid if h.host_name != s.host_name]
        if address is None or not others:
            continue
        if address.is_loopback:
            problems.append(
                s._problem(
                    "rpc_bind_address",
                    f"a loopback address is reachable from {s.host_name} only, and head "
                    f"{others[0].host_name} connects to it from another host; expected the address of "
                    f"{s.host_name}'s cluster-link interface, e.g. '10.151.0.12'",
                )
            )
            continue
        for h in others:
            if address in _addresses_of(h) and not (h.is_rpc_worker and h.rpc_bind_address == address):
                problems.append(
                    s._problem(
                        "rpc_bind_address",
                        f"it is an address of head {h.host_name}, which is not an RPC worker there, so "
                        f"{h.host_name}'s --rpc list would name {h.host_name} itself; expected "
                        f"{s.host_name}'s own cluster-link address",
                    )
                )

    # No two RPC servers on one address:port (the head could only reach one of them); every
    # instance of rpc_instances counts.
    taken: dict[tuple[IPAddress, int], str] = {}
    for s in workers:
        address = s.rpc_bind_address
        if address is None or address.is_unspecified:
            continue
        for port in sorted({server.port for server in s.rpc_servers}):
            key = (unscoped(address), port)  # fe80::12%eth0 and fe80::12%eth1: one address on the link
            if key in taken:
                problems.append(
                    s._problem(
                        "rpc_bind_address",
                        f"{taken[key]} already runs an RPC server on {endpoint(*key)}; expected "
                        "each worker's own cluster-link address (or a different rpc_port / rpc_instances port)",
                    )
                )
            else:
                taken[key] = s.host_name

    # llama-server and the RPC servers on one host must not share a port.
    for s in workers:
        ports = [server.port for server in s.rpc_servers]
        if not s.is_head or s.head_port not in ports:
            continue
        head_address, rpc_address = s.head_listen_address, s.rpc_bind_address or s.head_listen_address
        if head_address == rpc_address or head_address.is_unspecified or rpc_address.is_unspecified:
            source = "rpc_instances" if s.rpc_instances else "rpc_port"
            problems.append(
                s._problem(
                    "head_port",
                    f"{s.host_name} is head and RPC worker, and its RPC server already uses port "
                    f"{s.head_port} on {rpc_address}; expected a head_port different from every port of {source}",
                )
            )

    # The workers' firewalls open the RPC ports to the heads' addresses only: each head needs one.
    if workers:
        for h in inventory:
            head = valid.get(h.name)
            if head is not None and head.is_head and head.head_source_address is None:
                problems.append(
                    head._problem(
                        "rpc_bind_address",
                        f"{h.name} is in group {HEAD_GROUP}, and the RPC workers' firewalls accept "
                        "connections from the head's address only, but it has none: expected its "
                        "cluster-link address as rpc_bind_address (or head_bind_address, or an IP "
                        "address as ssh_hostname)",
                        fix=f"the inventory's host data of {h.name}",
                    )
                )

    problems.extend(_one_build_problems(inventory, valid))
    problems.extend(_rpc_client_problems(inventory, valid))

    # Workers are useless without a head that runs llama-server.
    if all_workers and not heads:
        problems.append(
            f"inventory: group {HEAD_GROUP} is empty but group {RPC_WORKERS_GROUP} has "
            f"{', '.join(all_workers)}: expected one host that runs llama-server in group "
            f"{HEAD_GROUP}. Fix it in the inventory: add e.g. {HEAD_GROUP} = [{all_workers[0]!r}]."
        )
    return problems


_ONE_BUILD = ("llama_cpp_ref", "llama_cpp_backend", "llama_cpp_cmake_extra_args")


def _one_build_problems(inventory: Inventory, valid: dict[str, Settings]) -> list[str]:
    """One llama.cpp commit, backend and flags on every head and worker: RPC client and servers speak one
    protocol. The first head's values are the reference; each host that differs is named."""
    members = [valid[h.name] for h in inventory
               if h.name in valid and (HEAD_GROUP in h.groups or RPC_WORKERS_GROUP in h.groups)]
    if len(members) < 2:
        return []
    reference = next((s for s in members if s.is_head), members[0])
    problems = []
    for s in members:
        for variable in _ONE_BUILD:
            want, have = getattr(reference, variable), getattr(s, variable)
            if have != want:
                problems.append(s._problem(
                    variable, f"{'head ' if reference.is_head else ''}{reference.host_name} has "
                    f"{masked(repr(want))}, and llama.cpp's RPC client and servers must run one build (commit, "
                    f"backend and flags) to speak one protocol; expected {masked(repr(want))} here, or the same "
                    "new value on every host (set it once in group_data/all.py)"))
    return problems


def _rpc_client_problems(inventory: Inventory, valid: dict[str, Settings]) -> list[str]:
    """What the heads connect to: an address (not 0.0.0.0), over IPv4, one head per RPC server."""
    problems = []
    heads = [h.name for h in inventory if HEAD_GROUP in h.groups]
    for h in inventory:
        s = valid.get(h.name)
        if s is None or not s.is_rpc_worker or s.rpc_bind_address is None:
            continue
        users = [name for name in heads if name != s.host_name]
        if not users:
            continue
        address = s.rpc_bind_address
        if address.is_unspecified and s.rpc_connect_address is None:
            problems.append(s._problem(
                "rpc_bind_address", f"the RPC server listens on every address, and the heads need one of "
                f"{s.host_name}'s addresses to connect to (never {address}); expected {s.host_name}'s "
                f"cluster-link address, or ssh_hostname as an IPv{address.version} address, which the heads "
                "then use"))
            continue
        connect = s.rpc_connect_address
        if connect is not None and connect.version == 6 and not connect.is_loopback:  # loopback: refused above
            problems.append(s._problem(
                "rpc_bind_address", f"llama.cpp's RPC client on head {users[0]} connects over IPv4 only (ggml-rpc "
                "resolves with gethostbyname and splits host:port at the first ':'); expected "
                f"{s.host_name}'s IPv4 cluster-link address"))
        variable = "rpc_instances" if s.rpc_instances else "rpc_port"
        for server in s.rpc_servers:
            if server.head is not None and server.head not in heads:
                problems.append(s._problem(
                    "rpc_instances", f"the server on port {server.port} is for head {server.head!r}, which is not "
                    f"in group {HEAD_GROUP}; expected one of {', '.join(heads) or 'the heads'}, or no 'head'"))
                continue
            clients = [name for name in users if server.head in (None, name)]
            if len(clients) > 1:
                example = [{"port": 50052 + i, "head": name} for i, name in enumerate(clients)]
                problems.append(s._problem(
                    variable, f"heads {' and '.join(clients)} would all use the RPC server on "
                    f"{endpoint(s.rpc_connect_address or address, server.port)}, and an RPC server serves one "
                    f"client at a time; expected one server per head, e.g. rpc_instances = {example}"))
    return problems



def _network(address: IPAddress) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The /24 (IPv4) or /64 (IPv6) around `address`: a guess at its link, for warnings only."""
    return ipaddress.ip_network(f"{unscoped(address)}/{24 if address.version == 4 else 64}", strict=False)


def head_source_warnings(valid: dict[str, Settings]) -> list[str]:
    """A head whose address for the workers' firewalls comes from head_bind_address or ssh_hostname, on
    another network than every worker: it likely connects from another address, which they refuse.

    A warning, not an error: the data holds no netmasks (a /16 cluster link is fine), so the network is
    a guess. The head step then reads the head's routes to its workers (route_problems) and stops before
    any change when they leave from another address: that is certain."""
    workers = [s.rpc_connect_address for s in valid.values() if s.is_rpc_worker and s.rpc_connect_address]
    found = []
    for s in valid.values():
        source = s.head_source_address
        if not s.is_head or source is None or s.rpc_bind_address is not None or not workers:
            continue
        if any(w.version == source.version and w in _network(source) for w in workers):
            continue
        variable = "head_bind_address" if s.head_bind_address == source else "ssh_hostname"
        found.append(
            f"{s.host_name}: the RPC workers' firewalls accept head {s.host_name} from {source} ({variable}), but "
            f"no worker is on its network ({_network(source)}): {s.host_name} connects to them from its "
            "address toward them, which they would refuse. Set rpc_bind_address of "
            f"{s.host_name} to its cluster-link address in {s._fix.get('rpc_bind_address', DEFAULT_FIX)}. (The "
            f"network is a guess from a /{_network(source).prefixlen}; the head step reads {s.host_name}'s routes to "
            "the workers and stops before any change if they leave from another address.)"
        )
    return found

