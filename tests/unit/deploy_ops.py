"""Run a step's @deploy function without hosts: settings and given facts in, its operations out.

    ops = deploy_ops(install_rocm, {"rocm_source": "therock", ...}, {Distro: distro("ubuntu", "24.04")}, monkeypatch)
    ops["Install ROCm | Update the dynamic linker's cache (ldconfig)"]  # -> ["ldconfig"]

Facts not given answer their default (nothing installed, no file). Each operation's commands are
generated as pyinfra generates them when it runs, with those facts.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.deploy import add_deploy
from pyinfra.api.host import Host
from pyinfra.context import ctx_host, ctx_state

from facts.distro import Distro


def distro(distro_id: str, version_id: str | None, codename: str = "") -> dict:
    """The Distro fact of a host with this os-release and GRUB (Debian testing has no VERSION_ID)."""
    lines = [f"os ID={distro_id}", f"os VERSION_CODENAME={codename}", "file /etc/default/grub"]
    return Distro().process(lines + ([f"os VERSION_ID={version_id}"] if version_id else []))


def deploy_ops(deploy: Callable, data: dict, facts: dict, monkeypatch: pytest.MonkeyPatch,
               name: str = "halo1") -> dict[str, list[str]]:
    """{operation name: [command text, ...]} of `deploy` on one host with `data` and `facts`."""
    def get_fact(self, fact, *args, **kwargs):
        return facts[fact] if fact in facts else fact.default()

    monkeypatch.setattr(Host, "get_fact", get_fact)
    inventory = Inventory(([(name, {"ssh_hostname": "10.151.0.11", **data})], {}))
    state = State(inventory, Config())
    for host in inventory:
        state.activate_host(host)
    add_deploy(state, deploy)
    host = inventory.get_host(name)
    ops = {}
    for op_hash in state.get_op_order():
        op_data = state.get_op_data_for_host(host, op_hash)
        with ctx_state.use(state), ctx_host.use(host):
            commands = list(op_data.command_generator())
        (op_name,) = state.get_op_meta(op_hash).names
        ops[op_name] = [c.get_raw_value() if hasattr(c, "get_raw_value") else repr(c) for c in commands]
    return ops


__all__ = ["Distro", "deploy_ops", "distro"]
