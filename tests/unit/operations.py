"""Operation tests without a host: run a step's @deploy function in a pyinfra State whose hosts answer
facts from data, and list the operations and commands it would run.

A case is a data file, tests/unit/operations/<case>.json:

    {"description": "...", "step": "deploys.grub.grub_kernel_args",
     "host": "halo2", "data": {"llama_cpp_backend": "hip"},
     "facts": {"Distro": "@fedora_43_grubby", "MemTotal": 134486163456, ...},
     "expected": {"operations": ["Set the kernel arguments of every boot entry with grubby"],
                  "commands": ["grubby --update-kernel=ALL"], "not_commands": ["apt"]}}

- ``facts`` are the facts of every host of the lab inventory (halo1 head and worker, halo2 and halo3
  workers), by class name, or with the arguments it is read with (``"Which(command=nft)"``, which
  wins over ``"Which"``); ``"@case"`` takes the ``expected`` value of tests/unit/facts/<Fact>/<case>.json, so a
  distribution is described once. A fact not given is the fact's default (pyinfra's facts: None,
  "nothing there").
- ``data`` is host data of every host (as group_data/all.py would set it); the rest are defaults.
- ``expected.operations``: the names of the operations ``host`` gets, in order (without the deploy's
  name), leaving out those whose ``_if`` is false now (one that waits for another operation's change
  is listed); ``commands``: text each found in some command of ``host``; ``not_commands``: text in none;
  ``fails``: whether an operation fails the host (its name starts with "Fail").
- ``step`` may be a list: the steps run one after the other, as deploys/full.py runs them.
- A step that refuses the settings while the run is prepared (SettingsError: no operation of any step
  runs) gives one operation, REFUSED, whose command is the error's text.

Commands are what the operation generates for the facts given: a shell command's text, ``upload
<dest>`` and its text for a file made in memory (a template, a StringIO), ``python <function> <kwargs>`` for a Python step (such as failing a host).
"""

from __future__ import annotations

import copy
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyinfra.api import Config, Inventory, State
from pyinfra.api.command import FileDownloadCommand, FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.api.deploy import add_deploy
from pyinfra.api.host import Host
from pyinfra.context import ctx_host, ctx_state

from deploys.settings import SettingsError

FACT_CASES = Path(__file__).parent / "facts"
HOSTS = {
    "halo1": {"ssh_hostname": "10.151.0.11", "rpc_bind_address": "10.151.0.11"},
    "halo2": {"ssh_hostname": "10.151.0.12", "rpc_bind_address": "10.151.0.12"},
    "halo3": {"ssh_hostname": "10.151.0.13", "rpc_bind_address": "10.151.0.13"},
}
GROUPS = {"head": ["halo1"], "rpc_workers": ["halo1", "halo2", "halo3"]}
REFUSED = "Fail: the settings are refused before any change"
# pyinfra facts its own operations need that have no default
BASE_FACTS = {"Os": "Linux", "Arch": "x86_64", "Which(command=useradd)": "/usr/sbin/useradd",
              "Which(command=groupadd)": "/usr/sbin/groupadd"}


@dataclass
class Operation:
    name: str
    commands: list[str] = field(default_factory=list)


def fact_value(fact: str, value: Any) -> Any:
    """A fact's value from a case: "@case" is the expected value of that fact's data file."""
    if isinstance(value, str) and value.startswith("@"):
        return json.loads((FACT_CASES / fact / f"{value[1:]}.json").read_text())["expected"]
    return value


def fact_key(name: str, kwargs: dict) -> str:
    """A fact read with arguments, as a case names it: 'Which(command=nft)', 'File(path=/srv/m.gguf)'."""
    arguments = ",".join(f"{k}={v}" for k, v in sorted(kwargs.items()) if not k.startswith("_"))
    return f"{name}({arguments})" if arguments else name


def command_text(command: Any) -> str:
    if isinstance(command, StringCommand):
        return command.get_raw_value()
    if isinstance(command, FunctionCommand):
        return f"python {command.function.__name__} {list(command.args)} {command.kwargs}"
    if isinstance(command, FileUploadCommand):  # the file's text too, when it was made here (a template)
        text = command.src.getvalue() if hasattr(command.src, "getvalue") else ""
        return f"upload {command.dest}" + (f"\n{text}" if isinstance(text, str) and text else "")
    if isinstance(command, FileDownloadCommand):
        return f"download {command.src}"
    return str(command)


def runs(conditions) -> bool:
    """False when an `_if` condition is known to be false now; one that depends on an earlier
    operation's change (did_change before that ran) counts as true: the operation may run."""
    for condition in conditions if isinstance(conditions, list) else [conditions] if conditions else []:
        try:
            if not condition():
                return False
        except Exception:  # noqa: BLE001 - did_change of an operation that has not run
            continue
    return True


def plan(step: str | list[str], facts: dict[str, Any], host: str = "halo2", data: dict | None = None,
         monkeypatch=None, host_data: dict[str, dict] | None = None) -> list[Operation]:
    """The operations `host` gets from the deploy function `step` ("deploys.grub.grub_kernel_args"), or from
    several steps in order; `data` is every host's, `host_data` {host: data} one host's own."""
    steps = [step] if isinstance(step, str) else step
    deploy_functions = []
    for name in steps:
        module, _, function = name.rpartition(".")
        deploy_functions.append(getattr(importlib.import_module(module), function))
    hosts = [(name, {**values, **(data or {}), **(host_data or {}).get(name, {})}) for name, values in HOSTS.items()]
    inventory = Inventory((hosts, {}), **{g: (members, {}) for g, members in GROUPS.items()})
    state = State(inventory, Config())
    values = {fact: fact_value(fact, value) for fact, value in {**BASE_FACTS, **facts}.items()}

    def get_fact(self, cls, *args, **kwargs):
        for key in (fact_key(cls.__name__, kwargs), cls.__name__):
            if key in values:
                return copy.deepcopy(values[key])
        return cls.default() if hasattr(cls, "default") else None

    monkeypatch.setattr(Host, "get_fact", get_fact)
    monkeypatch.setattr(Host, "noop", lambda self, description: None)
    monkeypatch.setattr(inventory, "get_active_hosts", lambda: list(inventory))  # as if all were connected
    target = inventory.get_host(host)
    refused = None
    for deploy_function in deploy_functions:  # one after the other, as deploys/full.py runs them
        try:
            add_deploy(state, deploy_function, host=[target])
        except SettingsError as e:  # the run stops while it is prepared: no operation of any step runs
            refused = Operation(REFUSED, [str(e)])
            break
    operations = []
    with ctx_state.use(state), ctx_host.use(target):
        for op_hash in state.get_op_order():
            if op_hash not in state.ops[target]:
                continue
            op_data = state.get_op_data_for_host(target, op_hash)
            if not runs(op_data.global_arguments.get("_if")):
                continue
            name = sorted(state.get_op_meta(op_hash).names)[0].split(" | ")[-1]
            operations.append(Operation(name, [command_text(c) for c in op_data.command_generator()]))
    return [refused] if refused else operations
