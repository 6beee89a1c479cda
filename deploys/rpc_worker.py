"""Run the llama.cpp RPC workers: one hardened systemd unit per server, its port open to the head only.

    pyinfra inventories/lab.py deploys/rpc_worker.py      # after deploys/llama_cpp.py

On a host that is not (or no longer) in group rpc_workers, its halo-rpc@ instances are stopped and
disabled and their env files removed, our firewalld service and rich rules or ufw rules go, and
when it is no head either, its nftables table too (deploys/firewall.py's remove_firewall).

On each host in group rpc_workers:

- the system user `llama-rpc` (no login shell, no home) in the groups render and video;
- `halo-rpc@.service`, a template unit with one instance per RPC server, named by its port. Instance
  N reads /etc/halo-provision/rpc-N.env (root-only: address, port, device, threads, the id of the
  llama.cpp build, and `rpc_env` with the instance's own `env` over it), runs `<llama_cpp_prefix>/current/bin/ggml-rpc-server -H <rpc_bind_address> -p N -c
  [-d <device>] [-t <threads>]` as that user with its tensor cache in /var/lib/halo-rpc/rpc, and
  is restarted only when the unit, its env file or the build changed. The RPC server exits with
  status 0 when it cannot bind (a cluster link that gets its address late) or gets a bad argument:
  systemd restarts it every 2 s whatever its exit status, and never gives up. `rpc_instances` lists the
  servers ([] = one on rpc_port); instances no longer listed are stopped, disabled and their env
  file removed;
- a firewall for the RPC ports: deploys/firewall.py (run first when this file runs alone, and by
  deploys/full.py before this step) loads the nftables table `inet halo_provision`, which accepts
  each server's heads on its own address and port and drops everyone else. firewalld's and ufw's own rules see the same packets and would drop the heads, so where one of
  them is active the heads are allowed there too: a firewalld service `halo-rpc` (the ports) with
  one rich rule per head in the zone of the interface carrying rpc_bind_address (Fedora Server puts
  each NetworkManager connection in a zone of its own; an interface in no zone gets the default
  zone), or ufw rules with the comment 'halo-provision'.

The heads' addresses are Settings.head_source_address: a head's rpc_bind_address (its cluster-link
address, from which it connects to the workers), else its head_bind_address, else its ssh_hostname
when that is an IP address; settings validation refuses a head with none of them.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from pyinfra import host
from pyinfra.api import FunctionCommand, StringCommand, deploy, operation
from pyinfra.operations import files

from deploys import shipped
from deploys.accounts import RPC_USER, account_reads, service_accounts
from deploys.common import env_file_line, failure, warn
from deploys.llama_cpp import coming_build
from deploys.plan import announce, daemon_reload_when, restart_when, service_running, show_file_change
from deploys.runcache import file_reads, prefetch, unit_reads
from deploys.settings import IPAddress, RpcInstance, Settings, settings
from deploys.topology import firewall_sources
from facts.llama_cpp import STAMP, LlamaCppInstall
from facts.rpc_worker import (
    ENV_DIR,
    FIREWALLD_SERVICE,
    UFW_COMMENT,
    FirewalldRpcRules,
    FirewallFrontends,
    RpcServerInstances,
    UfwRpcRules,
)

USER = RPC_USER
UNIT = "halo-rpc@.service"
CACHE_PRUNE = "/usr/local/libexec/halo-provision/rpc-cache-prune"  # deploys/scripts/rpc-cache-prune.sh


def env_path(port: int) -> str:
    return f"{ENV_DIR}/rpc-{port}.env"


def unit_data(prefix: str, stamp: dict) -> dict:
    """Values of halo-rpc@.service: the RPC binary through `current`, named as the build names it."""
    binary = f"{prefix}/current/bin/{Path(stamp['rpc_server']).name}"
    return {"service_user": USER, "env_dir": ENV_DIR, "binary": binary, "prune": CACHE_PRUNE}


def env_data(address: IPAddress, server: RpcInstance, stamp: dict, rpc_env: dict[str, str],
             cache_max_mib: int | None = None) -> dict:
    """Values of /etc/halo-provision/rpc-<port>.env for one instance: `env` is rpc_env with the
    instance's own env over it, as EnvironmentFile= lines; the tensor cache's limit in bytes."""
    env = {**rpc_env, **server.env}
    return {"build_id": stamp["id"], "address": str(address), "port": server.port,
            "device": server.device, "threads": server.threads,
            "cache_max_bytes": None if cache_max_mib is None else cache_max_mib * 1024 * 1024,
            "env": [env_file_line(name, value) for name, value in env.items()]}


def rich_rule(source: IPAddress) -> str:
    """A firewalld rich rule as `firewall-cmd --list-rich-rules` prints it."""
    family = "ipv6" if source.version == 6 else "ipv4"
    return f'rule family="{family}" source address="{source}" service name="{FIREWALLD_SERVICE}" accept'


def firewalld_zone(current: dict) -> str | None:
    """The zone whose rules apply to the head's packets: that of the interface carrying
    rpc_bind_address (Fedora Server puts each NetworkManager connection in a zone of its own), else
    the default zone (an interface in no zone gets it). While no interface has the address (its link
    is down), the zone that holds our rules already. None: firewalld named no zone."""
    if current["interface"] is None:
        placed = [zone for zone, rules in current["rich_rules"].items()
                  if any(f'service name="{FIREWALLD_SERVICE}"' in r for r in rules)]
        if placed:
            return placed[0]
    return current["interface_zone"] or current["default_zone"]


def firewalld_commands(current: dict, ports: list[int], sources: list[IPAddress]) -> list[str]:
    """Commands that make firewalld's permanent config match: service halo-rpc = the ports, one rich
    rule per head in the zone of the RPC interface (firewalld_zone); rules naming that service for
    other sources, or in other zones, go. `current`: FirewalldRpcRules."""
    permanent = ["firewall-cmd", "--permanent"]
    service = [*permanent, f"--service={FIREWALLD_SERVICE}"]
    have_ports = current["ports"]
    commands = [] if have_ports is not None else [[*permanent, f"--new-service={FIREWALLD_SERVICE}"]]
    have_ports = have_ports or []
    want_ports = [f"{port}/tcp" for port in sorted(set(ports))]
    commands += [[*service, f"--add-port={p}"] for p in want_ports if p not in have_ports]
    commands += [[*service, f"--remove-port={p}"] for p in have_ports if p not in want_ports]
    target = firewalld_zone(current)
    in_zone = [*permanent, f"--zone={target}"] if target else permanent
    zones = current["rich_rules"]
    ours = {zone: [r for r in rules if f'service name="{FIREWALLD_SERVICE}"' in r] for zone, rules in zones.items()}
    wanted = [rich_rule(source) for source in sources]
    have = ours.get(target, []) if target else [r for rules in ours.values() for r in rules]
    commands += [[*in_zone, f"--add-rich-rule={r}"] for r in wanted if r not in have]
    commands += [[*in_zone, f"--remove-rich-rule={r}"] for r in have if r not in wanted]
    commands += [[*permanent, f"--zone={zone}", f"--remove-rich-rule={r}"]
                 for zone, rules in ours.items() if target and zone != target for r in rules]
    if commands:
        commands.append(["firewall-cmd", "--reload"])  # the permanent config becomes the running one
    return [shlex.join(c) for c in commands]


def firewalld_removal(current: dict) -> list[str]:
    """Commands that take out what firewalld_commands added: our rich rules in every zone, then the
    service halo-rpc, then a reload. `current`: FirewalldRpcRules.

    >>> firewalld_removal({"ports": None, "rich_rules": {"public": []}})
    []
    """
    permanent = ["firewall-cmd", "--permanent"]
    commands = [[*permanent, f"--zone={zone}", f"--remove-rich-rule={rule}"]
                for zone, rules in current["rich_rules"].items() for rule in rules
                if f'service name="{FIREWALLD_SERVICE}"' in rule]
    if current["ports"] is not None:
        commands.append([*permanent, f"--delete-service={FIREWALLD_SERVICE}"])
    if commands:
        commands.append(["firewall-cmd", "--reload"])
    return [shlex.join(c) for c in commands]


def ufw_commands(current: list[dict], ports: list[int], sources: list[IPAddress]) -> list[str]:
    """Commands that make ufw allow exactly each head to each RPC port (our rules carry the comment
    'halo-provision'; other rules are left alone). `current`: UfwRpcRules."""
    wanted = [(str(source), port) for port in sorted(set(ports)) for source in sources]
    have = [(rule["source"], rule["port"]) for rule in current]
    add = [["ufw", "allow", "proto", "tcp", "from", a, "to", "any", "port", str(p), "comment", UFW_COMMENT]
           for a, p in wanted if (a, p) not in have]
    delete = [["ufw", "delete", "allow", "proto", "tcp", "from", a, "to", "any", "port", str(p)]
              for a, p in have if (a, p) not in wanted]
    return [shlex.join(c) for c in add + delete]


def _current_build(s: Settings) -> dict | None:
    """The stamp of the build `current` points at; while a run is prepared, the one this run's
    llama.cpp step will put there (deploys/llama_cpp.coming_build), so a dry run shows its change."""
    current = host.get_fact(LlamaCppInstall, prefix=s.llama_cpp_prefix, ref=s.llama_cpp_ref)["current"]
    coming = None if host.state.is_executing else coming_build(s)
    if coming is None:
        return current
    rpc_server = (current or {}).get("rpc_server") or "ggml-rpc-server"
    return {**(current or {}), "rpc_server": rpc_server,
            "id": coming["id"] or f"(the build of llama_cpp_ref {s.llama_cpp_ref})"}


def _no_build(prefix: str) -> FunctionCommand:
    return failure(f"no llama.cpp build to run: {prefix}/current/{STAMP} is missing; "
                   "run deploys/llama_cpp.py first (deploys/full.py does)")


@operation()
def rpc_unit(s: Settings):
    """Install halo-rpc@.service for the RPC binary of the build `current` points at, as found when
    this runs (after the build step of the same run)."""
    stamp = _current_build(s)
    if stamp is None:
        yield _no_build(s.llama_cpp_prefix)
        return
    yield from files.template._inner(src=shipped.template("etc/systemd/system/halo-rpc@.service.j2"),
                                     dest=f"/etc/systemd/system/{UNIT}", mode="644",
                                     jinja_env_kwargs=dict(shipped.JINJA), **unit_data(s.llama_cpp_prefix, stamp))


@operation()
def rpc_env_file(s: Settings, server: RpcInstance):
    """Write /etc/halo-provision/rpc-<port>.env (root-only: rpc_env may hold secrets), with the id of
    the build `current` points at when this runs."""
    stamp = _current_build(s)
    if stamp is None:
        yield _no_build(s.llama_cpp_prefix)
        return
    yield from files.template._inner(src=shipped.template("etc/halo-provision/rpc.env.j2"), dest=env_path(server.port),
                                     user="root", group="root", mode="600", jinja_env_kwargs=dict(shipped.JINJA),
                                     **env_data(s.rpc_bind_address, server, stamp, s.rpc_env, s.rpc_cache_max_mib))


@operation()
def remove_stale_instances(wanted: list[int]):
    """Stop and disable the halo-rpc@ instances whose port is not in `wanted`; remove their env files."""
    stale = [port for port in host.get_fact(RpcServerInstances) if port not in wanted]
    if not stale:
        host.noop("no RPC server instances besides " + ", ".join(map(str, wanted)))
        return
    for port in stale:
        unit = f"halo-rpc@{port}.service"
        announce(f"stop {unit}", f"port {port} is not in this host's rpc_instances / rpc_port (or the host "
                 "left rpc_workers)")
        show_file_change(env_path(port), "", None)
        yield StringCommand("systemctl", "disable", "--now", unit)
        yield StringCommand("systemctl", "reset-failed", unit, "2>/dev/null", "||", "true")
        yield StringCommand("rm", "-f", env_path(port))


@operation()
def firewalld_rpc_rules(ports: list[int], sources: list[IPAddress], address: IPAddress):
    """Allow the heads to the RPC ports in firewalld (service halo-rpc, one rich rule per head) in the
    zone of the interface carrying `address` (rpc_bind_address), else the default zone."""
    current = host.get_fact(FirewalldRpcRules, address=str(address))
    commands = firewalld_commands(current, ports, sources)
    if not commands:
        host.noop(f"firewalld already allows the heads to the RPC ports in zone {firewalld_zone(current)}")
    for command in commands:
        yield StringCommand(command)


@operation()
def ufw_rpc_rules(ports: list[int], sources: list[IPAddress]):
    """Allow the heads to the RPC ports in ufw (rules with the comment 'halo-provision')."""
    commands = ufw_commands(host.get_fact(UfwRpcRules), ports, sources)
    if not commands:
        host.noop("ufw already allows the heads to the RPC ports")
    for command in commands:
        yield StringCommand(command)


@operation()
def firewalld_rpc_rules_removed():
    """Take out our firewalld service halo-rpc and the rich rules naming it, in every zone."""
    commands = firewalld_removal(host.get_fact(FirewalldRpcRules, address=None))
    if not commands:
        host.noop("firewalld has no rule of ours")
    for command in commands:
        yield StringCommand(command)


def retire(is_head: bool) -> None:
    """A host not (or no longer) in group rpc_workers keeps no RPC server running, and no firewall
    rule for one; with no role left (not a head either), no firewall of ours at all."""
    remove_stale_instances(name="Stop the RPC servers of a host not in rpc_workers", wanted=[])
    frontends = host.get_fact(FirewallFrontends)
    if frontends["firewalld"]:
        firewalld_rpc_rules_removed(name="Remove the RPC ports from firewalld")
    if frontends["ufw"]:
        ufw_rpc_rules(name="Remove the RPC ports from ufw", ports=[], sources=[])
    if not is_head:
        from deploys.firewall import retire_firewall

        retire_firewall()


def reads(s: Settings) -> list:
    """The facts this step reads on a worker (for one prefetch: deploys/full.py reads every step's at once)."""
    if not s.is_rpc_worker:
        return []
    ports = [rpc.port for rpc in s.rpc_servers]
    return (file_reads(CACHE_PRUNE, f"/etc/systemd/system/{UNIT}", *(env_path(p) for p in ports))
            + unit_reads(*(f"halo-rpc@{p}.service" for p in ports)) + account_reads(s)
            + [(FirewallFrontends, {}), (RpcServerInstances, {}),
               (LlamaCppInstall, {"prefix": s.llama_cpp_prefix, "ref": s.llama_cpp_ref})])


def configure(s) -> tuple:
    """Everything of a worker up to its instances' env files; returns (the unit's op, [(port, env op)])."""
    servers = s.rpc_servers
    ports = [rpc.port for rpc in servers]
    sources = firewall_sources(host.inventory)
    prefetch(reads(s))
    if s.rpc_bind_address.version == 6:
        warn(f"rpc_bind_address {s.rpc_bind_address} is IPv6, but llama.cpp's RPC server has listened on "
             "IPv4 only so far (ggml-rpc opens an AF_INET socket): if `journalctl -u 'halo-rpc@*'` says "
             "\"Failed to create server socket\" every 2 s (systemd restarts it), use the worker's IPv4 "
             "cluster-link address")

    service_accounts(s)  # llama-rpc in render and video (deploys/accounts.py; once per run and host)

    files.put(name="Install the RPC tensor cache pruner", src=shipped.script("rpc-cache-prune.sh"),
              dest=CACHE_PRUNE, mode="755", create_remote_dir=True)
    unit = rpc_unit(name=f"Install {UNIT}", s=s)
    daemon_reload_when(unit, UNIT)
    frontends = host.get_fact(FirewallFrontends)
    if frontends["firewalld"]:
        firewalld_rpc_rules(name="Allow the heads to the RPC ports in firewalld", ports=ports, sources=sources,
                            address=s.rpc_bind_address)
    if frontends["ufw"]:
        ufw_rpc_rules(name="Allow the heads to the RPC ports in ufw", ports=ports, sources=sources)

    remove_stale_instances(name="Stop the RPC servers no longer in rpc_instances", wanted=ports)
    envs = [(rpc.port, rpc_env_file(name=f"Write the settings of halo-rpc@{rpc.port}", s=s, server=rpc))
            for rpc in servers]
    return unit, envs


def run_servers(unit, envs) -> None:
    for port, env in envs:
        instance = f"halo-rpc@{port}.service"
        restart_when(f"Restart halo-rpc@{port} for its new unit, settings or build", instance,
                     {f"{UNIT} changed": unit, f"{env_path(port)} changed (settings or build)": env})
        service_running(name=f"Run halo-rpc@{port} now and at every boot", service=instance)


@deploy("Run the llama.cpp RPC workers")
def rpc_worker() -> None:
    """On a head, llama-server on a build that is no longer `current` is stopped just before the RPC
    servers restart on the new one and started again right after (deploys/head.py's pause_for_new_build):
    it would reconnect to a server still on the old build and abort again."""
    from deploys.head import pause_for_new_build, resume_after_new_build

    s = settings(host)
    if s.is_rpc_worker:
        unit, envs = configure(s)
    else:
        retire(s.is_head)
    if s.is_head:
        pause_for_new_build(name="Stop llama-server while the RPC servers switch to the new build", s=s)
    if s.is_rpc_worker:
        run_servers(unit, envs)
    if s.is_head:
        resume_after_new_build(name="Start llama-server on the new build", s=s)


if __name__ in ("builtins", "__main__"):
    from deploys.firewall import firewall

    firewall()  # the ports accept their heads only before any RPC server listens
    rpc_worker()
