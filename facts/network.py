"""Which of its addresses a host sends from toward other hosts: the `src` of its route to each
(`ip route get`), the address the RPC workers' firewalls see a head connect from.

Usage::

    from facts.network import RouteSources
    host.get_fact(RouteSources, addresses=["10.151.0.12", "10.151.0.13"])
    # {"10.151.0.12": "10.151.0.11", "10.151.0.13": "10.151.0.11"}
"""

from __future__ import annotations

import ipaddress
import re
import shlex

from pyinfra.api import FactBase

_LINE = re.compile(r"^route (\S+)(?: .*)? src (\S+)(?: |$)")


class RouteSources(FactBase[dict]):
    """For each address, the source address of this host's route to it (`ip -o route get`); an address
    with no route (or no `ip` command) is left out.

    .. code:: python

        {"10.151.0.12": "10.151.0.11"}

    Default: {} (no route found, or no iproute2).
    """

    @staticmethod
    def default() -> dict:
        return {}

    def command(self, addresses: list[str]) -> str:
        script = 'for a in "$@"; do r=$(ip -o route get "$a" 2>/dev/null) && echo "route $a $r"; done; true'
        return f"bash -c {shlex.quote(script)} _ " + " ".join(shlex.quote(a) for a in addresses) + "; true"

    def process(self, output: list[str]) -> dict:
        found = {}
        for line in output:
            match = _LINE.match(line.strip())
            if not match:
                continue
            try:
                found[match[1]] = str(ipaddress.ip_address(match[2]))
            except ValueError:
                continue
        return found
