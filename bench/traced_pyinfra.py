"""The pyinfra CLI with each remote command recorded: on which host, for which step, fact or operation.

    .venv/bin/python -m bench.traced_pyinfra TRACE.jsonl -y INVENTORY deploys/full.py --data k=v ...

It is pyinfra's own CLI, run unchanged in this process; only its SSH connector (commands, SFTP
transfers) and its fact loader are wrapped to append one JSON line per remote command to TRACE:

    {"host": "halo2", "stage": "EXECUTE", "step": "Build llama.cpp", "by": "fact LlamaCppInstall",
     "op": "Build llama.cpp | Install what llama.cpp needs to build and run", "command": "..."}

`step` is the @deploy the command serves (during prepare: the deploy the preparing host is in,
which may read facts of other hosts); `by` is "fact <Name>", "operation" or "sftp put/get".
"""

from __future__ import annotations

import pyinfra_cli  # noqa: F401  (gevent's monkey patching comes first)

import json
import sys

import gevent
from pyinfra.api import facts
from pyinfra.connectors.ssh import SSHConnector
from pyinfra.context import ctx_host

_loading_fact: dict[int, str] = {}  # greenlet id -> fact it is loading


def _step_and_op(target) -> tuple[str, str | None]:
    """The step (deploy name) and operation a command on `target` belongs to."""
    state = target.state
    op_hash = target.current_op_hash
    if op_hash:
        names = sorted(state.get_op_meta(op_hash).names)
        name = names[0] if names else op_hash
        return (name.split(" | ")[0] if " | " in name else "(no step)"), name
    preparing = ctx_host.get()
    deploy = getattr(preparing, "current_deploy_name", None) or getattr(target, "current_deploy_name", None)
    return (deploy.split(" | ")[0] if deploy else "(no step)"), None


def _record(trace, target, by: str, command: str) -> None:
    step, op = _step_and_op(target)
    line = {"host": target.name, "stage": target.state.current_stage.name, "step": step, "by": by,
            "op": op, "command": command[:300]}
    trace.write(json.dumps(line) + "\n")
    trace.flush()


def install(trace) -> None:
    """Wrap the connector and the fact loader so every remote command is written to `trace`."""
    run_shell_command, put_file, get_file = (SSHConnector.run_shell_command, SSHConnector.put_file,
                                             SSHConnector.get_file)
    get_fact = facts._get_fact

    def traced_get_fact(state, host, cls, *args, **kwargs):
        key = id(gevent.getcurrent())
        _loading_fact[key] = cls.__name__
        try:
            return get_fact(state, host, cls, *args, **kwargs)
        finally:
            _loading_fact.pop(key, None)

    def traced_run(self, command, *args, **kwargs):
        fact = _loading_fact.get(id(gevent.getcurrent()))
        _record(trace, self.host, f"fact {fact}" if fact else "operation", str(command))
        return run_shell_command(self, command, *args, **kwargs)

    def traced_put(self, filename_or_io, remote_filename, *args, **kwargs):
        _record(trace, self.host, "sftp put", str(remote_filename))
        return put_file(self, filename_or_io, remote_filename, *args, **kwargs)

    def traced_get(self, remote_filename, filename_or_io, *args, **kwargs):
        _record(trace, self.host, "sftp get", str(remote_filename))
        return get_file(self, remote_filename, filename_or_io, *args, **kwargs)

    facts._get_fact = traced_get_fact
    SSHConnector.run_shell_command = traced_run
    SSHConnector.put_file = traced_put
    SSHConnector.get_file = traced_get


def main(argv: list[str]) -> int:
    from pyinfra_cli.main import main as pyinfra_main

    trace_path, args = argv[0], argv[1:]
    with open(trace_path, "w") as trace:
        install(trace)
        sys.argv = ["pyinfra", *args]
        try:
            pyinfra_main()
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
