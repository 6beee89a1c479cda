"""Where a host's value came from, so an error can say where to fix it; pyinfra's data precedence.

pyinfra merges a host's data from several places (global < groups < host < --data < assigned in deploy
code) and keeps the @deploy defaults on top of that; it has no public call that says which place a
value came from, so this module asks each place in the same order.

    fix_hint(host, "rpc_port")   # e.g. "group_data/rpc_workers.py (or the rpc_workers group's data ...)"
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyinfra.api import Host

DEFAULT_FIX = "the inventory's host data or group_data/all.py"
COMMAND_LINE_FIX = "the --data option on the command line"


def fix_hint(host: Host, variable: str) -> str:
    """Where the host's value of `variable` comes from, as "Fix it in <this>."."""
    inventory = host.inventory
    override = getattr(host.data, "override_datas", {}) or {}
    if variable in override:
        return "the deploy code that assigns host.data." + variable
    if variable in (inventory.get_override_data() or {}):
        return COMMAND_LINE_FIX
    if variable in inventory.get_host_data(host.name):
        return DEFAULT_FIX
    for group in reversed(list(host.groups)):
        if variable in inventory.get_group_data(group):
            return f"group_data/{group}.py (or the {group} group's data in the inventory)"
    return DEFAULT_FIX


def host_data(host: Host) -> dict[str, Any]:
    """The host's data without @deploy defaults: global < groups < host < --data < assigned."""
    inventory = host.inventory
    data: dict[str, Any] = {}
    data.update(inventory.get_data() or {})
    data.update(inventory.get_groups_data(host.groups))
    data.update(inventory.get_host_data(host.name))
    data.update(inventory.get_override_data() or {})
    data.update(getattr(host.data, "override_datas", {}) or {})
    return data
