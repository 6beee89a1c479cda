"""What a run will change, said before it changes it: `--dry` shows, per host, the diff of every file
that would change (secrets masked) and every service that would be (re)started, with the reason.

    pyinfra inventories/lab.py deploys/full.py --dry      # the same as --dry --diff

    unit = files.template(...)
    env = rpc_env_file(...)
    when_changed(name="Restart halo-rpc@50052 for its new unit or settings", then=systemd.service,
                 because={"its unit changed": unit, "its settings changed": env},
                 announce="restart halo-rpc@50052.service", service="halo-rpc@50052.service",
                 running=True, restarted=True)

pyinfra decides what changes by generating each operation's commands while the run is prepared
(the "Detected changes"), but it ignores `_if=` there: an operation gated on another one's change
always looks like a change then. `when_changed` decides itself, from the prediction of the
operations it depends on while the run is prepared (`changed`: OperationMeta.will_change) and from
what they did when it runs. Its lines read:

    [halo2] Will restart halo-rpc@50052.service: its settings changed       (while the run is prepared)
    [halo2] Restarting halo-rpc@50052.service: its settings changed         (when it happens)

and files written by our own commands (the GRUB defaults, /etc/kernel/cmdline) are shown as
pyinfra's files.put shows its own (`Will modify <path>` and a diff). Every line pyinfra logs goes
through `SecretMask`: `NAME=value` with a secret-looking NAME (token, key, secret, password,
credential) shows `NAME=***`, and URLs lose their credentials (deploys/settings.masked).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable

from pyinfra import host, logger
from pyinfra.api import operation
from pyinfra.api.operation import OperationMeta
from pyinfra.context import ctx_state
from pyinfra.operations import systemd
from pyinfra.operations.util.files import generate_color_diff

from deploys.settings.messages import _is_secret_name, masked

# NAME=value in a file's text or a diff line; the value stops at whitespace or a color code
_ASSIGNMENT = re.compile(r"(?P<name>\b[A-Za-z_][A-Za-z0-9_]*)=(?P<value>\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s\x1b]+)")
_DOING = {"restart": "Restarting", "reload": "Reloading", "start": "Starting", "stop": "Stopping"}


def mask_line(line: str) -> str:
    """`line` with the values of secret-looking variables and URL credentials replaced by ***.

    >>> mask_line('+ HF_TOKEN="hf_abc" LLAMA_ARG_API_KEY_FILE=/root/k GGML_X=1')
    '+ HF_TOKEN=*** LLAMA_ARG_API_KEY_FILE=/root/k GGML_X=1'
    """
    def one(m: re.Match) -> str:
        return f"{m['name']}=***" if _is_secret_name(m["name"].lower()) else m[0]
    return masked(_ASSIGNMENT.sub(one, line))


class SecretMask(logging.Filter):
    """Masks every record of pyinfra's logger (its diffs of our env files too) with mask_line."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        shown = "\n".join(mask_line(line) for line in text.split("\n"))
        if shown != text:
            record.msg, record.args = shown, None
        return True


def dry_run() -> bool:
    """Whether this is `pyinfra ... --dry` (the CLI keeps the flag to itself: its arguments tell)."""
    return "--dry" in sys.argv[1:]


def set_up() -> None:
    """Mask secrets in pyinfra's output; in a dry run, predict changes even with -y (pyinfra skips
    that with -y) and show diffs (called when deploys/ is imported)."""
    if not any(isinstance(f, SecretMask) for f in logger.filters):
        logger.addFilter(SecretMask())
    if dry_run() and ctx_state.isset():
        ctx_state.get().check_for_changes = True
        ctx_state.get().config.DIFF = True


def changed(op: OperationMeta) -> bool:
    """Whether `op` changed something (once the run executes) or will (while it is prepared)."""
    if host.state.is_executing:
        return op.is_complete() and op.did_change()
    return bool(op.will_change)


def reasons(because: dict[str, OperationMeta | Callable[[], bool] | bool]) -> list[str]:
    """The reasons of `because` ({reason: operation, or a function or value saying yes}) that hold."""
    found = []
    for reason, cause in because.items():
        if isinstance(cause, OperationMeta):
            yes = changed(cause)
        else:
            yes = cause() if callable(cause) else cause
        if yes:
            found.append(reason)
    return found


def announce(action: str, why: list[str] | str) -> None:
    """`Will <action>: why` while the run is prepared, `<Action>ing: why` when it runs, e.g.
    announce("restart halo-rpc@50052.service", ["its settings changed"])."""
    why = why if isinstance(why, str) else ", ".join(why)
    if host.state.is_executing:
        verb, _, rest = action.partition(" ")
        host.log(f"{_DOING[verb]} {rest}: {why}" if verb in _DOING else f"{action[:1].upper()}{action[1:]} now: {why}")
    else:
        host.log(f"Will {action}: {why}")


@operation()
def when_changed(because: dict, then, announce_as: str | None = None, **kwargs):
    """Run the operation `then` (with kwargs) when one of `because` holds (see `reasons`), saying why."""
    why = reasons(because)
    if not why:
        host.noop(f"{announce_as or then.__name__}: nothing it depends on changed")
        return
    if announce_as:
        announce(announce_as, why)
    yield from then._inner(**kwargs)


def show_file_change(path: str, old_text: str | None, new_text: str | None) -> None:
    """Log the diff of a file our own commands write (new_text None: remove), as files.put does with
    --diff (masked)."""
    if not host.state.config.DIFF or old_text == new_text:
        return
    if new_text is None:
        host.log(f"Will remove {path}", logger.info)
        return
    host.log(f"Will {'create' if old_text is None else 'modify'} {path}", logger.info)
    old = [] if old_text is None else old_text.splitlines(keepends=True)
    for line in generate_color_diff(old, new_text.splitlines(keepends=True)):
        logger.info("  %s", line)
    logger.info("")


def restart_when(name: str, service: str, because: dict) -> OperationMeta:
    """(Re)start `service` when one of `because` holds; a stopped one starts."""
    return when_changed(name=name, because=because, then=systemd.service, announce_as=f"restart {service}",
                        service=service, running=True, restarted=True)


def daemon_reload_when(unit: OperationMeta, unit_name: str) -> OperationMeta:
    """systemctl daemon-reload when the operation that writes `unit_name` changed it."""
    return when_changed(name="Reload systemd's units", because={f"{unit_name} changed": unit},
                        then=systemd.daemon_reload)


@operation()
def service_running(service: str, enabled: bool = True):
    """systemd.service(running=True, enabled=...), saying so when it starts the service."""
    for command in systemd.service._inner(service=service, running=True, enabled=enabled):
        if command.get_raw_value().split()[:2] == ["systemctl", "start"]:
            announce(f"start {service}", "it is not running")
        yield command
