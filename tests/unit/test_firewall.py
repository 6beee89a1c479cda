"""deploys/firewall.py without hosts: the nftables table of workers and heads, the hardened unit."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from pyinfra.api import Inventory

from deploys.firewall import input_rules, output_endpoints
from deploys.settings import validate_inventory
from deploys.shipped import render

LAB = {"halo1": "10.151.0.11", "halo2": "10.151.0.12", "halo3": "10.151.0.13"}


def cluster(heads=("halo1",), workers=("halo1", "halo2", "halo3"), **data: dict) -> dict:
    hosts = [(name, {"ssh_hostname": address, "rpc_bind_address": address, **data.get(name, {})})
             for name, address in LAB.items()]
    inventory = Inventory((hosts, {}), head=(list(heads), {}), rpc_workers=(list(workers), {}))
    return validate_inventory(inventory)


def ruleset(valid: dict, name: str) -> str:
    heads = [s for s in valid.values() if s.is_head]
    workers = [s for s in valid.values() if s.is_rpc_worker]
    return render("etc/halo-provision/firewall.nft.j2", nft="/usr/sbin/nft", table="halo_provision",
                  input=input_rules(valid[name], heads), output=output_endpoints(valid[name], workers),
                  service_user="llama-server")


def rules(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if " tcp dport " in line]


def test_a_worker_accepts_its_head_on_its_own_address_and_port_only():
    text = ruleset(cluster(), "halo2")
    assert rules(text) == [
        "ip daddr 10.151.0.12 tcp dport 50052 ip saddr { 10.151.0.11 } accept",
        "ip daddr 10.151.0.12 tcp dport 50052 counter drop",
    ]
    # replaces our table atomically, never the rest of the ruleset; no output chain on a worker
    assert "table inet halo_provision\ndelete table inet halo_provision\n" in text
    assert "flush ruleset" not in text and "chain output" not in text


def test_every_rule_names_the_servers_address_and_port_so_it_cannot_touch_another_service():
    valid = cluster(halo2={"rpc_instances": [{"port": 50052}, {"port": 50053, "device": "CPU"}]})
    for name in LAB:
        for rule in rules(ruleset(valid, name)):
            assert rule.startswith(("ip daddr 10.151.0.", "ip daddr . tcp dport {")), rule
            assert " tcp dport 22 " not in rule and " 8080" not in rule


def test_each_head_reaches_only_the_servers_it_uses():
    per_head = {"rpc_instances": [{"port": 50052, "head": "halo1"}, {"port": 50053, "head": "halo3"}]}
    valid = cluster(heads=("halo1", "halo3"), workers=("halo2",), halo2=per_head)
    assert rules(ruleset(valid, "halo2")) == [
        "ip daddr 10.151.0.12 tcp dport 50052 ip saddr { 10.151.0.11 } accept",
        "ip daddr 10.151.0.12 tcp dport 50052 counter drop",
        "ip daddr 10.151.0.12 tcp dport 50053 ip saddr { 10.151.0.13 } accept",
        "ip daddr 10.151.0.12 tcp dport 50053 counter drop",
    ]


def test_a_head_lets_only_llama_server_connect_to_the_rpc_servers():
    text = ruleset(cluster(), "halo1")
    assert rules(text) == [
        "ip daddr 10.151.0.11 tcp dport 50052 counter drop",  # its own server: for other heads, none here
        "ip daddr . tcp dport { 10.151.0.11 . 50052, 10.151.0.12 . 50052, 10.151.0.13 . 50052 } "
        'meta skuid != { "root", "llama-server" } counter reject with tcp reset',
    ]


def test_a_server_on_every_address_is_matched_by_family_and_port():
    valid = cluster(halo2={"rpc_bind_address": "0.0.0.0", "rpc_allow_any_address": True})
    assert rules(ruleset(valid, "halo2"))[0] == "meta nfproto ipv4 tcp dport 50052 ip saddr { 10.151.0.11 } accept"
    assert "10.151.0.12 . 50052" in ruleset(valid, "halo1")  # the head connects to its ssh address, not 0.0.0.0


@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft")
@pytest.mark.parametrize("name", list(LAB))
def test_ruleset_is_valid_nftables(tmp_path, name):
    path = tmp_path / "firewall.nft"
    # the user must exist where nft checks the file: nobody stands in for llama-server
    path.write_text(ruleset(cluster(), name).replace('"llama-server"', '"nobody"'))
    proc = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True)
    if "Operation not permitted" in proc.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN")
    assert proc.returncode == 0, proc.stderr


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith(("#", "["))]


def test_firewall_unit_loads_our_file_only_with_one_capability():
    text = render("etc/systemd/system/halo-firewall.service.j2", nft="/usr/sbin/nft",
                  rules="/etc/halo-provision/firewall.nft", table="halo_provision")
    lines = directives(text)
    assert "ExecStart=/usr/sbin/nft -f /etc/halo-provision/firewall.nft" in lines
    assert "ExecStop=/usr/sbin/nft delete table inet halo_provision" in lines
    assert "WantedBy=sysinit.target" in lines and "PartOf=nftables.service" in lines
    assert "CapabilityBoundingSet=CAP_NET_ADMIN" in lines and "NoNewPrivileges=yes" in lines
    assert "RestrictAddressFamilies=AF_NETLINK AF_UNIX" in lines
