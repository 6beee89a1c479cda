"""deploys/rpc_worker.py without hosts: unit and env file text, nftables ruleset, firewalld and ufw
commands from facts, rpc_instances validation."""

from __future__ import annotations

import subprocess
from ipaddress import ip_address

import pytest
from pyinfra.api import Inventory, StringCommand

from deploys.rpc_worker import (
    env_data,
    firewalld_commands,
    firewalld_rpc_rules,
    remove_stale_instances,
    ufw_commands,
    ufw_rpc_rules,
    unit_data,
)
from deploys.settings import RpcInstance, SettingsError, validate_inventory
from deploys.shipped import render
from deploys.topology import firewall_sources as head_addresses
from facts.rpc_worker import (
    FirewalldRpcRules,
    FirewallFrontends,
    RpcServerInstances,
    UfwRpcRules,
)
from tests.unit import fake_host

STAMP = {
    "id": "0123456789ab-1a2b3c4d", "commit": "0123456789abcdef0123456789abcdef01234567", "ref": "b10760",
    "backend": "hip", "flags": ["-DGGML_RPC=ON"],
    "rpc_server": "/opt/llama.cpp/builds/0123456789ab-1a2b3c4d/bin/ggml-rpc-server",
    "server": "/opt/llama.cpp/builds/0123456789ab-1a2b3c4d/bin/llama-server",
}
HEAD = ip_address("10.151.0.11")


def env_lines(server: RpcInstance, address="10.151.0.12", rpc_env: dict | None = None,
              cache_max_mib: int | None = None) -> dict[str, str]:
    text = render("etc/halo-provision/rpc.env.j2",
                  **env_data(ip_address(address), server, STAMP, rpc_env or {}, cache_max_mib))
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


# -- the unit and its environment files -------------------------------------------------------


def test_env_file_without_device_and_threads_leaves_them_out():
    assert env_lines(RpcInstance(port=50052)) == {
        "LLAMA_BUILD_ID": "0123456789ab-1a2b3c4d", "RPC_HOST": "10.151.0.12", "RPC_PORT": "50052",
        "RPC_DEVICE_ARGS": "", "RPC_THREADS_ARGS": "", "RPC_CACHE_ARGS": "-c", "RPC_CACHE_MAX_BYTES": "auto",
    }


@pytest.mark.parametrize("cache_max_mib, args, limit", [(None, "-c", "auto"), (2, "-c", "2097152"), (0, "", "0")])
def test_env_file_carries_the_tensor_cache_limit(cache_max_mib, args, limit):
    lines = env_lines(RpcInstance(port=50052), cache_max_mib=cache_max_mib)
    assert (lines["RPC_CACHE_ARGS"], lines["RPC_CACHE_MAX_BYTES"]) == (args, limit)


def test_unit_prunes_the_cache_around_each_run_and_passes_c_from_the_env_file():
    lines = directives(unit_text())
    prune = "-/bin/sh /usr/local/libexec/halo-provision/rpc-cache-prune /var/lib/halo-rpc/rpc ${RPC_CACHE_MAX_BYTES}"
    assert f"ExecStartPre={prune}" in lines and f"ExecStopPost={prune}" in lines
    start = next(line for line in lines if line.startswith("ExecStart="))
    assert " -c " not in start and "$RPC_CACHE_ARGS" in start


def test_env_file_with_device_and_threads():
    lines = env_lines(RpcInstance(port=50053, device="ROCm0,Vulkan0", threads=8))
    assert lines["RPC_PORT"] == "50053"
    assert lines["RPC_DEVICE_ARGS"] == "-d ROCm0,Vulkan0"
    assert lines["RPC_THREADS_ARGS"] == "-t 8"


def test_env_file_has_rpc_env_then_the_instance_env_over_it_quoted():
    server = RpcInstance(port=50053, env={"GGML_VK_VISIBLE_DEVICES": "1", "Y": "it's $HOME"})
    lines = env_lines(server, rpc_env={"GGML_VK_VISIBLE_DEVICES": "0", "ROCBLAS_USE_HIPBLASLT": "1"})
    assert lines["GGML_VK_VISIBLE_DEVICES"] == '"1"'
    assert lines["ROCBLAS_USE_HIPBLASLT"] == '"1"'
    assert lines["Y"] == '"it\'s \\$HOME"'
    assert lines["RPC_PORT"] == "50053"


def test_env_file_changes_with_rpc_env_only_for_the_instances_it_reaches():
    plain, own = RpcInstance(port=50052), RpcInstance(port=50053, env={"A": "2"})
    assert env_lines(plain, rpc_env={"A": "1"}) != env_lines(plain, rpc_env={"A": "3"})
    assert env_lines(own, rpc_env={"A": "1"}) == env_lines(own, rpc_env={"A": "3"})  # its own A wins


def test_env_file_changes_with_the_build():
    other = dict(STAMP, id="fedcba987654-1a2b3c4d")
    server = RpcInstance(port=50052)
    first = render("etc/halo-provision/rpc.env.j2", **env_data(HEAD, server, STAMP, {}))
    second = render("etc/halo-provision/rpc.env.j2", **env_data(HEAD, server, other, {}))
    assert first != second and "LLAMA_BUILD_ID=fedcba987654-1a2b3c4d" in second


def unit_text(stamp=STAMP, prefix="/opt/llama.cpp") -> str:
    return render("etc/systemd/system/halo-rpc@.service.j2", **unit_data(prefix, stamp))


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith(("#", "["))]


def test_unit_runs_the_current_build_with_the_instance_settings():
    lines = directives(unit_text())
    assert ("ExecStart=/opt/llama.cpp/current/bin/ggml-rpc-server -H ${RPC_HOST} -p ${RPC_PORT} $RPC_CACHE_ARGS "
            "$RPC_DEVICE_ARGS $RPC_THREADS_ARGS") in lines
    assert "EnvironmentFile=/etc/halo-provision/rpc-%i.env" in lines
    assert "User=llama-rpc" in lines
    assert "StateDirectory=halo-rpc" in lines and "Environment=LLAMA_CACHE=/var/lib/halo-rpc" in lines


def sections(text: str) -> dict[str, list[str]]:
    """The directives of a unit file by section: {"Unit": [...], "Service": [...], ...}."""
    found: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif line and not line.startswith("#"):
            found.setdefault(current, []).append(line)
    return found


def test_unit_restarts_the_server_whatever_its_exit_status_and_never_gives_up():
    """ggml-rpc-server exits with 0 when it cannot bind: on-failure would leave it down."""
    unit = sections(unit_text())
    assert "Restart=always" in unit["Service"] and "RestartSec=2" in unit["Service"]
    assert "StartLimitIntervalSec=0" in unit["Unit"]  # systemd reads it in [Unit] only
    assert not [line for line in unit["Service"] if line.startswith(("StartLimit", "Restart=on"))]


def test_unit_names_the_binary_as_an_older_build_does():
    old = dict(STAMP, rpc_server="/srv/llama/builds/x/bin/rpc-server")
    assert "ExecStart=/srv/llama/current/bin/rpc-server -H" in unit_text(old, "/srv/llama")


def test_unit_gives_mesa_a_writable_shader_cache():
    lines = directives(unit_text())
    assert "CacheDirectory=halo-rpc" in lines
    assert "Environment=MESA_SHADER_CACHE_DIR=/var/cache/halo-rpc" in lines


def test_unit_hardening():
    lines = directives(unit_text())
    for wanted in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                   "PrivateDevices=no", "DevicePolicy=closed", "DeviceAllow=/dev/kfd rw",
                   "DeviceAllow=char-drm rw", "CapabilityBoundingSet=", "RestrictNamespaces=yes",
                   "SystemCallFilter=@system-service"):
        assert wanted in lines, wanted
    assert not [line for line in lines if line.startswith(("ReadWritePaths=", "ProtectSystem=full"))]


# -- head addresses -----------------------------------------------------------------------------


def inventory(head: dict | None = None, halo2: dict | None = None, head_group=("halo1",)) -> Inventory:
    halo1 = {"ssh_hostname": "10.151.0.11", "rpc_bind_address": "10.151.0.11", **(head or {})}
    h2 = {"ssh_hostname": "10.151.0.12", "rpc_bind_address": "10.151.0.12", **(halo2 or {})}
    halo1 = {k: v for k, v in halo1.items() if v is not None}
    hosts = [("halo1", halo1), ("halo2", h2)]
    return Inventory((hosts, {}), head=(list(head_group), {}), rpc_workers=(["halo1", "halo2"], {}))


def sources_of(inv: Inventory) -> list[str]:
    valid = validate_inventory(inv)
    return [str(valid[h.name].head_source_address) for h in inv.get_group("head")]


def test_head_address_is_its_rpc_bind_address_first():
    assert sources_of(inventory({"head_bind_address": "10.151.0.99"})) == ["10.151.0.11"]


def test_head_address_falls_back_to_head_bind_address_then_ssh_hostname():
    per_head = [{"port": 50052, "head": "halo3"}, {"port": 50053, "head": "halo4"}]  # one client per server
    inv = Inventory(([("halo2", {"ssh_hostname": "10.151.0.12", "rpc_bind_address": "10.151.0.12",
                                 "rpc_instances": per_head}),
                      ("halo3", {"ssh_hostname": "10.151.0.13", "head_bind_address": "10.151.0.99"}),
                      ("halo4", {"ssh_hostname": "fd51::14"})], {}),
                    head=(["halo3", "halo4"], {}), rpc_workers=(["halo2"], {}))
    assert sources_of(inv) == ["10.151.0.99", "fd51::14"]


def test_head_without_any_address_is_refused():
    inv = Inventory(([("halo2", {"ssh_hostname": "10.151.0.12", "rpc_bind_address": "10.151.0.12"}),
                      ("head1", {"ssh_hostname": "head1.lan", "head_bind_address": "0.0.0.0"})], {}),
                    head=(["head1"], {}), rpc_workers=(["halo2"], {}))
    with pytest.raises(SettingsError) as info:
        validate_inventory(inv)
    (problem,) = info.value.problems
    assert problem.startswith("head1: rpc_bind_address = None is invalid: head1 is in group head")
    assert "firewalls accept connections from the head's address only" in problem
    assert "Fix it in the inventory's host data of head1." in problem


def test_head_addresses_of_the_inventory():
    inv = inventory()
    validate_inventory(inv)
    assert head_addresses(inv) == [ip_address("10.151.0.11")]


# -- rpc_instances ------------------------------------------------------------------------------


def test_instances_default_to_one_server_on_rpc_port():
    valid = validate_inventory(inventory(halo2={"rpc_port": 50060}))
    assert valid["halo2"].rpc_servers == [RpcInstance(port=50060)]
    assert valid["halo2"].rpc_endpoints == ["10.151.0.12:50060"]


def test_instances_replace_rpc_port():
    instances = [{"port": 50052, "device": "ROCm0"}, {"port": 50053, "threads": 4}]
    s = validate_inventory(inventory(halo2={"rpc_instances": instances}))["halo2"]
    assert [(i.port, i.device, i.threads) for i in s.rpc_servers] == [(50052, "ROCm0", None), (50053, None, 4)]
    assert s.rpc_endpoints == ["10.151.0.12:50052", "10.151.0.12:50053"]


@pytest.mark.parametrize("instances, words", [
    ([{"port": 0}], ["entry {'port': 0} is not allowed", "port 1024 to 65535"]),
    ([{"port": "50052"}], ["entry {'port': '50052'} is not allowed"]),
    ([{"device": "ROCm0"}], ["entry {'device': 'ROCm0'} is not allowed"]),
    ([{"port": 50052, "gpu": "ROCm0"}], ["entry {'port': 50052, 'gpu': 'ROCm0'} is not allowed"]),
    ([{"port": 50052, "device": "ROCm0; rm -rf /"}], ["ggml device names separated by commas"]),
    ([{"port": 50052, "threads": 0}], ["threads 1 to 1024"]),
    ([50052], ["entry 50052 is not allowed"]),
    ("50052", ["a list of RPC servers"]),
    ([{"port": 50052}, {"port": 50052, "device": "ROCm0"}],
     ["port 50052 is used by 2 instances; expected each on its own port"]),
])
def test_bad_instances_are_refused(instances, words):
    with pytest.raises(SettingsError) as info:
        validate_inventory(inventory(halo2={"rpc_instances": instances}))
    (problem,) = info.value.problems
    assert problem.startswith(f"halo2: rpc_instances = {instances!r} is invalid: ")
    for word in words:
        assert word in problem


@pytest.mark.parametrize("env", [{"RPC_PORT": "1"}, {"MESA_SHADER_CACHE_DIR": "/tmp"}, {"LLAMA_CACHE": "/x"}])
def test_rpc_env_may_not_set_what_the_unit_sets(env):
    with pytest.raises(SettingsError) as info:
        validate_inventory(inventory(halo2={"rpc_env": env}))
    (problem,) = info.value.problems
    assert problem.startswith(f"halo2: rpc_env = {env!r} is invalid: {next(iter(env))} is set by halo-provision")


def test_an_instance_env_is_checked_like_rpc_env():
    instances = [{"port": 50052, "env": {"RPC_HOST": "0.0.0.0"}}]
    with pytest.raises(SettingsError) as info:
        validate_inventory(inventory(halo2={"rpc_instances": instances}))
    (problem,) = info.value.problems
    assert "RPC_HOST is set by halo-provision in halo-rpc@50052 from rpc_bind_address" in problem
    with pytest.raises(SettingsError) as info:
        validate_inventory(inventory(halo2={"rpc_instances": [{"port": 50052, "env": {"A": "x\ny"}}]}))
    assert "optional env: a dict like rpc_env" in info.value.problems[0]


def test_rpc_env_reaches_every_instance():
    s = validate_inventory(inventory(halo2={"rpc_env": {"GGML_VK_VISIBLE_DEVICES": "0"},
                                            "rpc_instances": [{"port": 50052, "device": "Vulkan0"}]}))["halo2"]
    assert s.rpc_env == {"GGML_VK_VISIBLE_DEVICES": "0"} and s.rpc_servers[0].env == {}


def test_instances_on_another_workers_address_and_port_are_refused():
    inv = inventory(halo2={"rpc_bind_address": "10.151.0.11", "rpc_instances": [{"port": 50053}, {"port": 50052}]})
    with pytest.raises(SettingsError) as info:
        validate_inventory(inv)
    (problem,) = info.value.problems
    assert "halo1 already runs an RPC server on 10.151.0.11:50052" in problem


def test_head_port_must_differ_from_every_instance_port():
    inv = inventory(head={"head_port": 50053, "rpc_instances": [{"port": 50052}, {"port": 50053}]})
    with pytest.raises(SettingsError) as info:
        validate_inventory(inv)
    (problem,) = info.value.problems
    assert problem.startswith("halo1: head_port = 50053 is invalid: ")
    assert "different from every port of rpc_instances" in problem


# -- firewalld and ufw: from facts to commands --------------------------------------------------


def run_operation(operation, facts: dict, **kwargs) -> tuple[list[str], list[str]]:
    """The shell commands an operation yields on halo2 for these facts, and its noop messages."""
    commands, noops = fake_host.run_operation(operation, facts, host_name="halo2", **kwargs)
    assert all(isinstance(c, StringCommand) for c in commands)
    return [c.get_raw_value() for c in commands], noops


RULE = 'rule family="ipv4" source address="10.151.0.11" service name="halo-rpc" accept'


def firewalld(ports=None, interface="eth0", interface_zone=None, default_zone="public", **rich_rules) -> dict:
    """A FirewalldRpcRules value: rich rules by zone (default: an empty default zone)."""
    return {"ports": ports, "interface": interface, "interface_zone": interface_zone, "default_zone": default_zone,
            "rich_rules": rich_rules or {default_zone: []}}


def test_firewalld_fresh_interface_in_no_zone_gets_the_default_zone():
    commands, _ = run_operation(firewalld_rpc_rules, {FirewalldRpcRules: firewalld()},
                                ports=[50052], sources=[HEAD], address=ip_address("10.151.0.12"))
    assert commands == [
        "firewall-cmd --permanent --new-service=halo-rpc",
        "firewall-cmd --permanent --service=halo-rpc --add-port=50052/tcp",
        f"firewall-cmd --permanent --zone=public '--add-rich-rule={RULE}'",
        "firewall-cmd --reload",
    ]


def test_firewalld_interface_in_the_default_zone():
    current = firewalld(interface_zone="public", public=[])
    assert firewalld_commands(current, [50052], [HEAD])[2] == f"firewall-cmd --permanent --zone=public '--add-rich-rule={RULE}'"


def test_firewalld_interface_in_its_own_zone_gets_the_rule_there_and_it_leaves_the_default_zone():
    """Fedora Server: a NetworkManager connection in zone FedoraServer, the default zone elsewhere;
    a rule an earlier run put in the default zone moves."""
    current = firewalld(ports=["50052/tcp"], interface="enp1s0", interface_zone="FedoraServer", default_zone="public",
                        FedoraServer=[], public=[RULE, 'rule family="ipv4" source address="192.0.2.7" accept'])
    assert firewalld_commands(current, [50052], [HEAD]) == [
        f"firewall-cmd --permanent --zone=FedoraServer '--add-rich-rule={RULE}'",
        f"firewall-cmd --permanent --zone=public '--remove-rich-rule={RULE}'",
        "firewall-cmd --reload",
    ]
    done = firewalld(ports=["50052/tcp"], interface="enp1s0", interface_zone="FedoraServer", default_zone="public",
                     FedoraServer=[RULE], public=[])
    commands, noops = run_operation(firewalld_rpc_rules, {FirewalldRpcRules: done}, ports=[50052], sources=[HEAD],
                                    address=ip_address("10.151.0.12"))
    assert commands == [] and noops == ["firewalld already allows the heads to the RPC ports in zone FedoraServer"]


def test_firewalld_rules_stay_in_their_zone_while_the_address_is_on_no_interface():
    current = firewalld(ports=["50052/tcp"], interface=None, default_zone="public", FedoraServer=[RULE], public=[])
    assert firewalld_commands(current, [50052], [HEAD]) == []


def test_firewalld_zone_names_are_quoted():
    current = firewalld(interface_zone="odd zone;x", public=[])
    assert "'--zone=odd zone;x'" in firewalld_commands(current, [50052], [HEAD])[2]


def test_firewalld_configured_changes_nothing():
    facts = {FirewalldRpcRules: firewalld(ports=["50052/tcp"], public=[RULE, 'rule family="ipv4" source '
                                          'address="192.0.2.7" port port="22" protocol="tcp" accept'])}
    commands, noops = run_operation(firewalld_rpc_rules, facts, ports=[50052], sources=[HEAD],
                                    address=ip_address("10.151.0.12"))
    assert commands == [] and noops == ["firewalld already allows the heads to the RPC ports in zone public"]


def test_firewalld_moves_ports_and_heads():
    current = firewalld(ports=["50052/tcp", "50060/tcp"], public=[RULE])
    new_head, v6_head = ip_address("10.151.0.21"), ip_address("fd51::11")
    assert firewalld_commands(current, [50052, 50053], [new_head, v6_head]) == [
        "firewall-cmd --permanent --service=halo-rpc --add-port=50053/tcp",
        "firewall-cmd --permanent --service=halo-rpc --remove-port=50060/tcp",
        "firewall-cmd --permanent --zone=public '--add-rich-rule=rule family=\"ipv4\" source address=\"10.151.0.21\" "
        "service name=\"halo-rpc\" accept'",
        "firewall-cmd --permanent --zone=public '--add-rich-rule=rule family=\"ipv6\" source address=\"fd51::11\" "
        "service name=\"halo-rpc\" accept'",
        f"firewall-cmd --permanent --zone=public '--remove-rich-rule={RULE}'",
        "firewall-cmd --reload",
    ]


def test_ufw_fresh_two_heads_two_ports():
    commands, _ = run_operation(ufw_rpc_rules, {UfwRpcRules: []}, ports=[50053, 50052],
                                sources=[HEAD, ip_address("fd51::11")])
    assert commands == [
        "ufw allow proto tcp from 10.151.0.11 to any port 50052 comment halo-provision",
        "ufw allow proto tcp from fd51::11 to any port 50052 comment halo-provision",
        "ufw allow proto tcp from 10.151.0.11 to any port 50053 comment halo-provision",
        "ufw allow proto tcp from fd51::11 to any port 50053 comment halo-provision",
    ]


def test_ufw_configured_changes_nothing_and_stale_rules_go():
    current = [{"source": "10.151.0.11", "port": 50052}]
    commands, noops = run_operation(ufw_rpc_rules, {UfwRpcRules: current}, ports=[50052], sources=[HEAD])
    assert commands == [] and noops
    assert ufw_commands(current + [{"source": "10.151.0.11", "port": 50060}], [50052], [HEAD]) == [
        "ufw delete allow proto tcp from 10.151.0.11 to any port 50060",
    ]


def test_stale_instances_are_stopped_disabled_and_forgotten():
    commands, _ = run_operation(remove_stale_instances, {RpcServerInstances: [50052, 50060]}, wanted=[50052])
    assert commands == [
        "systemctl disable --now halo-rpc@50060.service",
        "systemctl reset-failed halo-rpc@50060.service 2>/dev/null || true",
        "rm -f /etc/halo-provision/rpc-50060.env",
    ]
    commands, noops = run_operation(remove_stale_instances, {RpcServerInstances: [50052]}, wanted=[50052])
    assert commands == [] and noops


@pytest.mark.parametrize("fact, args", [(RpcServerInstances, {}), (FirewallFrontends, {}),
                                        (FirewalldRpcRules, {"address": "127.0.0.1"}), (UfwRpcRules, {})])
def test_fact_commands_exit_0_here(fact, args):
    proc = subprocess.run(["/bin/sh", "-c", fact().command(**args)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_a_former_worker_s_servers_are_all_stopped_and_a_never_worker_changes_nothing():
    commands, _ = run_operation(remove_stale_instances, {RpcServerInstances: [50052, 50053]}, wanted=[])
    assert [c for c in commands if c.startswith("systemctl disable")] == [
        "systemctl disable --now halo-rpc@50052.service", "systemctl disable --now halo-rpc@50053.service"]
    commands, noops = run_operation(remove_stale_instances, {RpcServerInstances: []}, wanted=[])
    assert commands == [] and noops


# -- a host with no role left: no firewall rule, table or unit of ours ---------------------------


def test_firewalld_rules_and_service_go_from_every_zone_on_a_former_worker():
    from deploys.rpc_worker import firewalld_rpc_rules_removed

    other = 'rule family="ipv4" source address="10.0.0.9" service name="ssh" accept'
    current = firewalld(ports=["50052/tcp"], public=[RULE, other], work=[RULE])
    commands, _ = run_operation(firewalld_rpc_rules_removed, {FirewalldRpcRules: current})
    assert commands == [
        f"firewall-cmd --permanent --zone=public '--remove-rich-rule={RULE}'",
        f"firewall-cmd --permanent --zone=work '--remove-rich-rule={RULE}'",
        "firewall-cmd --permanent --delete-service=halo-rpc",
        "firewall-cmd --reload",
    ]
    commands, noops = run_operation(firewalld_rpc_rules_removed, {FirewalldRpcRules: firewalld(public=[other])})
    assert commands == [] and noops == ["firewalld has no rule of ours"]


def test_ufw_rules_of_ours_go_on_a_former_worker():
    current = [{"source": "10.151.0.11", "port": 50052}, {"source": "10.151.0.14", "port": 50053}]
    assert ufw_commands(current, [], []) == ["ufw delete allow proto tcp from 10.151.0.11 to any port 50052",
                                             "ufw delete allow proto tcp from 10.151.0.14 to any port 50053"]


def test_the_firewall_of_a_host_with_no_role_is_removed_once_its_rpc_servers_are_gone():
    from deploys.firewall import remove_firewall
    from facts.firewall import HaloFirewall

    there = {"unit": True, "rules": True, "table": True, "enabled": "enabled"}
    commands, _ = run_operation(remove_firewall, {RpcServerInstances: [], HaloFirewall: there})
    assert commands == [
        "systemctl disable --now halo-firewall.service",
        "! /usr/sbin/nft list table inet halo_provision >/dev/null 2>&1 || /usr/sbin/nft delete table inet halo_provision",
        "rm -f /etc/systemd/system/halo-firewall.service /etc/halo-provision/firewall.nft",
        "systemctl daemon-reload",
        "systemctl reset-failed halo-firewall.service 2>/dev/null || true",
    ]
    commands, noops = run_operation(remove_firewall, {RpcServerInstances: [50052], HaloFirewall: there})
    assert commands == [] and "RPC servers on port(s) 50052 are still set up" in noops[0]
    gone = {"unit": False, "rules": False, "table": False, "enabled": None}
    commands, noops = run_operation(remove_firewall, {RpcServerInstances: [], HaloFirewall: gone})
    assert commands == [] and noops == ["no halo-provision firewall on a host with no role"]


def test_llama_server_stops_on_a_host_that_left_head_and_a_never_head_changes_nothing():
    from pyinfra.facts.files import File

    from deploys.head import stop_serving
    from facts.services import UnitStates

    unit = "halo-llama-server.service"
    serving = {UnitStates: {unit: {"active": "active", "enabled": "enabled"}}, File: {"mode": 600}}
    commands, _ = run_operation(stop_serving, serving)
    assert commands == [f"systemctl disable --now {unit} 2>/dev/null || true",
                        f"systemctl reset-failed {unit} 2>/dev/null || true",
                        "rm -f /etc/halo-provision/llama-server.env"]
    commands, noops = run_operation(stop_serving, {UnitStates: {}, File: None})
    assert commands == [] and noops
