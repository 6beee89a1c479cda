"""The halo-provision firewall on the RPC workers and the heads: one nftables table, loaded at boot.

    pyinfra inventories/lab.py deploys/firewall.py     # deploys/rpc_worker.py and deploys/head.py run it first

The llama.cpp RPC server has no authentication: whoever reaches its port runs code on the GPU. The
table `inet halo_provision` (/etc/halo-provision/firewall.nft, loaded by halo-firewall.service at
boot and again whenever nftables.service flushes the ruleset) holds:

- on a worker, chain `input`: for each RPC server, `ip daddr <rpc_bind_address> tcp dport <port>
  ip saddr { <its heads> } accept`, then the same match `drop`. Every rule names the server's own
  address and port, so no rule of ours can touch another service of the host (sshd, llama-server),
  whatever port it uses. A server bound to every address (rpc_allow_any_address) is matched by its
  port on every address of its family. The heads of a server are those that use it (rpc_instances'
  `head`, else every head but the worker itself), by their Settings.head_source_address;
- on a head, chain `output`: connections to any RPC server of the cluster are refused (TCP reset)
  for every local user but llama-server's and root (`meta skuid`): another user on the head cannot
  reach the workers through the head's allowed address. Root is let through on purpose: it owns this
  firewall and could lift any rule, and root's own tools (deploys/head.py's checks, an admin's
  probe) keep working.

firewalld's and ufw's own rules are added by deploys/rpc_worker.py where they are active.

A host in neither group keeps none of it: remove_firewall() (run by deploys/rpc_worker.py and
deploys/head.py once they stopped that host's servers) stops and disables the unit, deletes the
table and removes the unit and rules files.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.facts.server import Which
from pyinfra.operations import files, server, systemd

from deploys import shipped
from deploys.accounts import HEAD_USER, account_reads, service_accounts
from deploys.common import install_packages
from deploys.runcache import file_reads, prefetch, unit_reads
from deploys.plan import announce, daemon_reload_when, when_changed
from deploys.settings import IPAddress, Settings, settings
from deploys.topology import heads_of, heads_using, workers_of
from facts.distro import Distro
from facts.firewall import HaloFirewall
from facts.rpc_worker import RpcServerInstances

FIREWALL_UNIT = "halo-firewall.service"
ENV_DIR = "/etc/halo-provision"
FIREWALL_RULES = f"{ENV_DIR}/firewall.nft"
NFT = "/usr/sbin/nft"
NFT_TABLE = "halo_provision"


def _family(address: IPAddress) -> str:
    return "ip6" if address.version == 6 else "ip"


def _unscoped(address: IPAddress) -> str:
    return str(address).partition("%")[0]  # nft knows no IPv6 scope: the address itself


def input_rules(worker: Settings, heads: list[Settings]) -> list[dict]:
    """One rule pair per RPC server of `worker`: its address and port, and the heads that use it."""
    address = worker.rpc_bind_address
    if not worker.is_rpc_worker or address is None:
        return []
    family = _family(address)
    if address.is_unspecified:
        where = f"meta nfproto {'ipv6' if address.version == 6 else 'ipv4'}"
    else:
        where = f"{family} daddr {_unscoped(address)}"
    rules = []
    for rpc in worker.rpc_servers:
        sources = sorted({_unscoped(h.head_source_address) for h in heads_using(worker, rpc, heads)
                          if h.head_source_address is not None and h.head_source_address.version == address.version})
        rules.append({"match": f"{where} tcp dport {rpc.port}", "family": family, "sources": sources})
    return rules


def output_endpoints(head: Settings, workers: list[Settings]) -> dict[str, list[str]]:
    """{"ip": ["<address> . <port>", ...], "ip6": [...]}: every RPC server of the cluster, for a head."""
    if not head.is_head:
        return {}
    found: dict[str, set[str]] = {}
    for w in workers:
        address = w.rpc_connect_address
        if address is None:
            continue
        for rpc in w.rpc_servers:
            found.setdefault(_family(address), set()).add(f"{_unscoped(address)} . {rpc.port}")
    return {family: sorted(endpoints) for family, endpoints in sorted(found.items())}


def firewall_data(s: Settings, inventory) -> dict:
    """Values of firewall.nft for host `s`: its input rules (worker) and output endpoints (head)."""
    return {"nft": NFT, "table": NFT_TABLE, "input": input_rules(s, heads_of(inventory)),
            "output": output_endpoints(s, workers_of(inventory)), "service_user": HEAD_USER}


def load_rules_command(rules: str = FIREWALL_RULES) -> str:
    """Check, then load the rules file; a refused file is moved aside (to <file>.refused) and the command fails.

    >>> print(load_rules_command())  # doctest: +NORMALIZE_WHITESPACE
    /usr/sbin/nft -c -f /etc/halo-provision/firewall.nft && /usr/sbin/nft -f /etc/halo-provision/firewall.nft
    || { mv -f /etc/halo-provision/firewall.nft /etc/halo-provision/firewall.nft.refused; exit 1; }
    """
    nft, path, refused = (shlex.quote(v) for v in (NFT, rules, f"{rules}.refused"))
    return f"{nft} -c -f {path} && {nft} -f {path} || {{ mv -f {path} {refused}; exit 1; }}"


def reads(s: Settings) -> list:
    """The facts this step reads on a host (for one prefetch: deploys/full.py reads every step's at once)."""
    if not (s.is_rpc_worker or s.is_head):
        return []
    return (file_reads(FIREWALL_RULES, f"/etc/systemd/system/{FIREWALL_UNIT}") + unit_reads(FIREWALL_UNIT)
            + account_reads(s) + [(Which, {"command": "nft"})])


@deploy("Load the halo-provision firewall")
def firewall() -> None:
    s = settings(host)
    if not (s.is_rpc_worker or s.is_head):
        return
    prefetch(reads(s))  # what this step reads, in one command
    if s.is_head:  # the egress rule names llama-server's user: nft refuses a user that does not exist
        service_accounts(s)
    if not host.get_fact(Which, command="nft"):  # only this step installs it: no apt update when present
        install_packages(host.get_fact(Distro), "Install nftables", ["nftables"], cache_time=3600)
    rules = files.template(name="Write the RPC firewall rules",
                           src=shipped.template("etc/halo-provision/firewall.nft.j2"), dest=FIREWALL_RULES,
                           mode="644", jinja_env_kwargs=dict(shipped.JINJA),
                           **firewall_data(s, host.inventory))
    unit = files.template(name=f"Install {FIREWALL_UNIT}",
                          src=shipped.template("etc/systemd/system/halo-firewall.service.j2"),
                          dest=f"/etc/systemd/system/{FIREWALL_UNIT}", mode="644", jinja_env_kwargs=dict(shipped.JINJA),
                          nft=NFT, rules=FIREWALL_RULES, table=NFT_TABLE)
    daemon_reload_when(unit, FIREWALL_UNIT)
    # Changed rules are loaded by nft itself, not by `systemctl reload`: systemd 252 has been seen to fail
    # that reload intermittently (the control process exits 219/CGROUP: its cgroup, pruned once the unit's
    # last process had exited, raced with the new one), which left the old table in place and a server on a
    # new address unprotected. nft -f replaces the table atomically; a file nft refuses is moved aside, so
    # the run stops here and the next run writes and loads it again instead of finding it unchanged.
    when_changed(name="Load the changed RPC firewall rules", then=server.shell, commands=[load_rules_command()],
                 because={f"{FIREWALL_RULES} changed": rules}, announce_as=f"reload {FIREWALL_UNIT}")
    systemd.service(name="Load the RPC firewall at every boot", service=FIREWALL_UNIT, running=True, enabled=True)


@operation()
def remove_firewall():
    """On a host in neither group rpc_workers nor head: stop and disable halo-firewall.service, delete
    the table, remove the unit and rules files. Kept while a halo-rpc@ instance is left (its port
    would be open to all): deploys/rpc_worker.py stops them first."""
    left = host.get_fact(RpcServerInstances)
    if left:
        host.noop(f"the firewall stays: RPC servers on port(s) {', '.join(map(str, left))} are still set up "
                  "here; deploys/rpc_worker.py stops them")
        return
    found = host.get_fact(HaloFirewall, unit=FIREWALL_UNIT, rules=FIREWALL_RULES, table=NFT_TABLE)
    if not (found["unit"] or found["rules"] or found["table"]):
        host.noop("no halo-provision firewall on a host with no role")
        return
    if found["unit"]:
        announce(f"stop {FIREWALL_UNIT}", "this host is in neither group rpc_workers nor head")
        yield StringCommand("systemctl", "disable", "--now", FIREWALL_UNIT)  # its ExecStop deletes the table
    if found["table"]:
        yield StringCommand(f"! {NFT} list table inet {NFT_TABLE} >/dev/null 2>&1 || {NFT} delete table inet {NFT_TABLE}")
    yield StringCommand("rm", "-f", f"/etc/systemd/system/{FIREWALL_UNIT}", FIREWALL_RULES)
    if found["unit"]:
        yield StringCommand("systemctl", "daemon-reload")
        yield StringCommand("systemctl", "reset-failed", FIREWALL_UNIT, "2>/dev/null", "||", "true")


def retire_firewall() -> None:
    """A host with no role left keeps no firewall of ours (call it after its servers are stopped)."""
    remove_firewall(name="Remove the halo-provision firewall of a host with no role")


if __name__ in ("builtins", "__main__"):
    firewall()
