"""Service facts: systemd units' states, and the TCP sockets a host listens on.

Usage::

    from facts.services import TcpListeners, UnitStates
    host.get_fact(UnitStates, units=["halo-rpc@50052.service"])
    # {"halo-rpc@50052.service": {"active": "active", "enabled": "enabled"}}
    host.get_fact(TcpListeners)      # [{"address": "10.151.0.12", "port": 50052}, ...]
"""

from __future__ import annotations

import re
import shlex

from pyinfra.api import FactBase

_STATE = re.compile(r"^[a-z-]+$")


class UnitStates(FactBase[dict]):
    """`systemctl is-active` and `is-enabled` of each unit in `units`.

    .. code:: python

        {"halo-rpc@50052.service": {"active": "active", "enabled": "enabled"}}

    A unit systemd does not know reads {"active": "inactive", "enabled": "not-found"}.
    Default (no output): {}.
    """

    @staticmethod
    def default() -> dict:
        return {}

    def command(self, units: list[str]) -> str:
        return "".join(
            f"echo {shlex.quote(u)} $(systemctl is-active {shlex.quote(u)} 2>/dev/null)"
            f" $(systemctl is-enabled {shlex.quote(u)} 2>/dev/null); "
            for u in units
        ) + "true"

    def process(self, output: list[str]) -> dict:
        states = {}
        for line in output:
            fields = line.split()
            if not fields or not fields[0].endswith((".service", ".socket", ".timer")):
                continue
            active = fields[1] if len(fields) > 1 and _STATE.match(fields[1]) else "inactive"
            enabled = fields[2] if len(fields) > 2 and _STATE.match(fields[2]) else "not-found"
            states[fields[0]] = {"active": active, "enabled": enabled}
        return states


class TcpListeners(FactBase[list]):
    """The TCP sockets in LISTEN state (`ss -Hltn`): local address (IPv6 without brackets, no
    %interface; "0.0.0.0" / "::" for every address) and port, sorted.

    .. code:: python

        [{"address": "10.151.0.12", "port": 50052}, {"address": "::", "port": 22}]

    Default (no ss, nothing listening): [].
    """

    @staticmethod
    def default() -> list:
        return []

    def command(self) -> str:
        return "ss -Hltn 2>/dev/null; true"

    def process(self, output: list[str]) -> list:
        found = set()
        for line in output:
            fields = line.split()
            if len(fields) < 4 or fields[0] != "LISTEN":
                continue
            address, sep, port = fields[3].rpartition(":")
            if not sep or not port.isdigit():
                continue
            address = address.strip("[]").split("%")[0]
            found.add(("0.0.0.0" if address == "*" else address, int(port)))
        return [{"address": a, "port": p} for a, p in sorted(found, key=lambda ap: (ap[1], ap[0]))]
