"""RPC worker facts: which halo-rpc@<port> instances exist, and the firewalls around them.

Usage::

    from facts.rpc_worker import FirewalldRpcRules, FirewallFrontends, RpcServerInstances, UfwRpcRules
    host.get_fact(RpcServerInstances)   # [50052, 50053]
    host.get_fact(FirewallFrontends)    # {"firewalld": False, "ufw": True}
    host.get_fact(UfwRpcRules)          # [{"source": "10.151.0.11", "port": 50052}]
"""

from __future__ import annotations

import re
import shlex

from pyinfra.api import FactBase

from facts import sections

ENV_DIR = "/etc/halo-provision"
FIREWALLD_SERVICE = "halo-rpc"  # firewalld service holding the RPC ports; our rich rules name it
UFW_COMMENT = "halo-provision"  # comment on the ufw rules we add

_INSTANCE = re.compile(r"(?:\brpc-(\d{1,5})\.env\b|\bhalo-rpc@(\d{1,5})\.service\b)")


class RpcServerInstances(FactBase[list]):
    """Ports of the RPC server instances on the host: those with an env file
    (/etc/halo-provision/rpc-<port>.env), and enabled, running or failed units halo-rpc@<port>.service.

    .. code:: python

        [50052, 50053]

    Default: [] (none).
    """

    @staticmethod
    def default() -> list:
        return []

    def command(self) -> str:
        return (
            f"ls -1 {ENV_DIR} 2>/dev/null; "
            "find /etc/systemd/system -name 'halo-rpc@*.service' 2>/dev/null; "
            # active, failed or busy units only: `systemctl status` loads a gone instance as inactive
            "systemctl list-units --plain --no-legend --full 'halo-rpc@*.service' 2>/dev/null; true"
        )

    def process(self, output: list[str]) -> list:
        ports = set()
        for line in output:
            for env_port, unit_port in _INSTANCE.findall(line):
                port = int(env_port or unit_port)
                if 1 <= port <= 65535:
                    ports.add(port)
        return sorted(ports)


class FirewallFrontends(FactBase[dict]):
    """Which firewall managers are active: firewalld running (`firewall-cmd --state`), ufw
    enabled (`ufw status`). Their rules apply on top of our nftables table.

    .. code:: python

        {"firewalld": False, "ufw": True}

    Default: {"firewalld": False, "ufw": False} (neither installed).
    """

    @staticmethod
    def default() -> dict:
        return {"firewalld": False, "ufw": False}

    def command(self) -> str:
        return (
            'echo "firewalld: $(firewall-cmd --state 2>/dev/null)"; '
            'echo "ufw: $(LC_ALL=C ufw status 2>/dev/null | head -n 1)"'
        )

    def process(self, output: list[str]) -> dict:
        found = self.default()
        for line in output:
            name, _, value = line.partition(":")
            if name == "firewalld":
                found["firewalld"] = value.strip() == "running"
            elif name == "ufw":
                found["ufw"] = value.strip() == "Status: active"
        return found


class FirewalldRpcRules(FactBase[dict]):
    """firewalld's configuration for the RPC ports: the ports of our service `halo-rpc` (permanent;
    None when the service does not exist), the interface that carries `address` (the worker's
    rpc_bind_address; None: no interface is looked up), that interface's zone now (None: in no zone, so the default zone's rules
    apply to it), the default zone, and the permanent rich rules of every zone.

    .. code:: python

        {"ports": ["50052/tcp"], "interface": "enp1s0", "interface_zone": "FedoraServer",
         "default_zone": "FedoraServer",
         "rich_rules": {"FedoraServer": ['rule family="ipv4" source address="10.151.0.11" service name="halo-rpc" accept'],
                        "public": []}}

    Default: {"ports": None, "interface": None, "interface_zone": None, "default_zone": None, "rich_rules": {}}.
    """

    @staticmethod
    def default() -> dict:
        return {"ports": None, "interface": None, "interface_zone": None, "default_zone": None, "rich_rules": {}}

    def command(self, address: str | None) -> str:
        service = shlex.quote(f"--service={FIREWALLD_SERVICE}")
        return (
            "echo '## ports'; "
            f"firewall-cmd --permanent {service} --get-ports 2>/dev/null || echo '(no service)'; "
            + (f"iface=$(ip -o addr show to {shlex.quote(address)} 2>/dev/null | awk '{{print $2; exit}}'); "
               if address else "iface=; ") +
            "echo '## interface'; echo \"$iface\"; "
            "echo '## interface zone'; "
            "[ -z \"$iface\" ] || firewall-cmd --get-zone-of-interface=\"$iface\" 2>/dev/null; "
            "echo '## default zone'; firewall-cmd --get-default-zone 2>/dev/null; "
            "echo '## zones'; firewall-cmd --permanent --list-all-zones 2>/dev/null; true"
        )

    def process(self, output: list[str]) -> dict:
        found = sections(output)
        words = {name: [line.strip() for line in lines if line.strip()] for name, lines in found.items()}
        ports_lines = words.get("ports")
        ports = None
        if ports_lines is not None and "(no service)" not in ports_lines:
            ports = sorted(p for line in ports_lines for p in line.split() if re.fullmatch(r"\d+/\w+", p))
        return {"ports": ports, "interface": _name(words.get("interface")),
                "interface_zone": _name(words.get("interface zone")),
                "default_zone": _name(words.get("default zone")), "rich_rules": _zone_rules(found.get("zones", []))}


_NAME = re.compile(r"[A-Za-z0-9_.@:-]{1,32}")  # an interface or zone name ("no zone" is none)


def _name(lines: list[str] | None) -> str | None:
    return lines[0] if lines and len(lines) == 1 and _NAME.fullmatch(lines[0]) else None


def _zone_rules(lines: list[str]) -> dict[str, list[str]]:
    """Rich rules by zone from `firewall-cmd --list-all-zones`: a zone starts at an unindented line
    ("public (default)"), its rich rules are the indented lines that start with "rule "."""
    rules: dict[str, list[str]] = {}
    zone = None
    for line in lines:
        if line and not line[0].isspace():
            name = line.split()[0]
            zone = name if _NAME.fullmatch(name) else None
            if zone is not None:
                rules.setdefault(zone, [])
        elif zone is not None and line.strip().startswith("rule "):
            rules[zone].append(line.strip())
    return rules


class UfwRpcRules(FactBase[list]):
    """The ufw rules halo-provision added (comment 'halo-provision'), from `ufw show added`.

    .. code:: python

        [{"source": "10.151.0.11", "port": 50052}]

    Default: [] (none, or ufw missing).
    """

    @staticmethod
    def default() -> list:
        return []

    def command(self) -> str:
        return "LC_ALL=C ufw show added 2>/dev/null; true"

    def process(self, output: list[str]) -> list:
        rules = []
        for line in output:
            try:
                words = shlex.split(line)
            except ValueError:
                continue
            if words[:2] != ["ufw", "allow"] or words[-2:] != ["comment", UFW_COMMENT]:
                continue
            fields = dict(zip(words[2::2], words[3::2]))  # from A to any port P proto tcp comment C
            if fields.get("proto") == "tcp" and fields.get("port", "").isdigit() and "from" in fields:
                rules.append({"source": fields["from"], "port": int(fields["port"])})
        return sorted(rules, key=lambda r: (r["port"], r["source"]))
