"""Run one operation's body without a host: facts by class in, its commands and noop messages out.

    commands, noops = run_operation(private_key_file, {File: None}, path="/etc/halo-provision/api-key")
    commands[0].args[0]    # "halo1: head_api_key_file = '/etc/halo-provision/api-key' does not exist; ..."

For a whole step (settings, every operation, several hosts) see tests/unit/operations.py and deploy_ops.py.
"""

from __future__ import annotations

from pyinfra.api import Config
from pyinfra.context import ctx_host


class FakeState:
    is_executing = True  # the operation runs now: it reads facts as it would on the host
    config = Config()  # pyinfra's defaults: no --diff


class FakeHost:
    """Just enough of a pyinfra host for an operation's body: facts by class, noop messages."""

    state = FakeState()

    def __init__(self, facts: dict, name: str = "halo1"):
        self.name = name
        self.facts = facts
        self.noops: list[str] = []
        self.logs: list[str] = []  # host.log lines (deploys/plan.announce)

    def log(self, message: str, *args) -> None:
        self.logs.append(message)

    def get_fact(self, fact, **kwargs):
        return self.facts[fact]

    def noop(self, message: str) -> None:
        self.noops.append(message)


def run_operation(operation, facts: dict, host_name: str = "halo1", **kwargs) -> tuple[list, list[str]]:
    """The commands `operation` yields on host `host_name` with these facts, and its noop messages."""
    fake = FakeHost(facts, host_name)
    with ctx_host.use(fake):
        commands = list(operation._inner(**kwargs))
    return commands, fake.noops
