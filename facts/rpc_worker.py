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
    """firewalld's permanent configuration for the RPC ports: the ports of our service `halo-rpc`
    (None when the service does not exist) and the rich rules of the default zone.

    .. code:: python

        {"ports": ["50052/tcp"],
         "rich_rules": ['rule family="ipv4" source address="10.151.0.11" service name="halo-rpc" accept']}

    Default: {"ports": None, "rich_rules": []}.
    """

    @staticmethod
    def default() -> dict:
        return {"ports": None, "rich_rules": []}

    def command(self) -> str:
        service = shlex.quote(f"--service={FIREWALLD_SERVICE}")
        return (
            "echo '## ports'; "
            f"firewall-cmd --permanent {service} --get-ports 2>/dev/null || echo '(no service)'; "
            "echo '## rich rules'; firewall-cmd --permanent --list-rich-rules 2>/dev/null; true"
        )

    def process(self, output: list[str]) -> dict:
        found = {name: [line.strip() for line in lines if line.strip()] for name, lines in sections(output).items()}
        ports_lines = found.get("ports")
        ports = None
        if ports_lines is not None and "(no service)" not in ports_lines:
            ports = sorted(p for line in ports_lines for p in line.split() if re.fullmatch(r"\d+/\w+", p))
        return {"ports": ports, "rich_rules": found.get("rich rules", [])}


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
