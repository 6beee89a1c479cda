"""What the head's firewall lets through: can llama-server's user, and can any other user, open a TCP
connection to each RPC server?

Usage::

    from facts.firewall import RpcReach
    host.get_fact(RpcReach, endpoints=["10.151.0.12:50052"], user="llama-server")
    # {"user": True, "endpoints": {"10.151.0.12:50052": {"user": "open", "other": "closed"}}}
"""

from __future__ import annotations

import re
import shlex

from pyinfra.api import FactBase

PROBE_TIMEOUT_S = 3
OTHER_USER = "nobody"  # stands for every local user but llama-server's
_LINE = re.compile(r"^reach (\S+) (open|closed|skipped) (open|closed)$")


class RpcReach(FactBase[dict]):
    """For each `address:port`, whether `user` ("user") and the user nobody ("other") connect to it
    within 3 s (bash's /dev/tcp, run with runuser). "user": whether `user` exists at all. With
    probe_user=False `user` is not tried ("skipped"): an RPC server serves one client at a time, and
    a probe while llama-server holds it waits in its accept queue (which holds one or two).

    .. code:: python

        {"user": True, "endpoints": {"10.151.0.12:50052": {"user": "open", "other": "closed"}}}

    Default: {"user": False, "endpoints": {}}.
    """

    @staticmethod
    def default() -> dict:
        return {"user": False, "endpoints": {}}

    def command(self, endpoints: list[str], user: str, probe_user: bool = True) -> str:
        probe = "runuser -u \"$1\" -- timeout {t} bash -c \"exec 3<>/dev/tcp/$2/$3\" 2>/dev/null".format(
            t=PROBE_TIMEOUT_S)
        as_user = '$(try "$0" "$a" "$p")' if probe_user else "skipped"
        script = (
            f"try() {{ if {probe}; then echo open; else echo closed; fi; }}; "
            "id -u \"$0\" >/dev/null 2>&1 && echo user || exit 0; "
            "for ep in \"$@\"; do a=${ep%:*}; p=${ep##*:}; "
            f"echo \"reach $ep {as_user} $(try {OTHER_USER} \"$a\" \"$p\")\"; done"
        )
        return f"bash -c {shlex.quote(script)} {shlex.quote(user)} " + " ".join(map(shlex.quote, endpoints)) + "; true"

    def process(self, output: list[str]) -> dict:
        found = {"user": False, "endpoints": {}}
        for line in output:
            if line.strip() == "user":
                found["user"] = True
            match = _LINE.match(line.strip())
            if match:
                found["endpoints"][match[1]] = {"user": match[2], "other": match[3]}
        return found


class HaloFirewall(FactBase[dict]):
    """What deploys/firewall.py left on a host: its unit file, its rules file, whether the table
    inet halo_provision is loaded, and the unit's enablement (`systemctl is-enabled`).

    .. code:: python

        {"unit": True, "rules": True, "table": True, "enabled": "enabled"}

    Default: {"unit": False, "rules": False, "table": False, "enabled": None} (none of it).
    """

    @staticmethod
    def default() -> dict:
        return {"unit": False, "rules": False, "table": False, "enabled": None}

    def command(self, unit: str, rules: str, table: str) -> str:
        u, r = shlex.quote(f"/etc/systemd/system/{unit}"), shlex.quote(rules)
        return (
            f"[ -e {u} ] && echo unit; [ -e {r} ] && echo rules; "
            f"nft list table inet {shlex.quote(table)} >/dev/null 2>&1 && echo table; "
            f"echo \"enabled $(systemctl is-enabled {shlex.quote(unit)} 2>/dev/null)\"; true"
        )

    def process(self, output: list[str]) -> dict:
        found = self.default()
        for line in output:
            word, _, value = line.strip().partition(" ")
            if word in ("unit", "rules", "table") and not value:
                found[word] = True
            elif word == "enabled" and re.fullmatch(r"[a-z-]+", value.strip()):
                found["enabled"] = value.strip()
        return found
