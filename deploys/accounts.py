"""The render and video groups and the system users the services run as, made in one place.

    from deploys.accounts import service_accounts
    service_accounts(settings(host))  # in any step that needs them; the first one of a run adds the operation

llama-server runs as `llama-server` on a head, each RPC server as `llama-rpc` on a worker: system
users without login or home, in render and video (the groups that open /dev/kfd and /dev/dri). One
operation reading one fact (facts.accounts.Accounts) makes whatever of them is missing on a host,
for all of the host's roles at once; deploys/full.py adds it in its groups step, and the later
steps that need the users (firewall, rpc_worker, head) add nothing more. Each step run on its own
adds it itself.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import StringCommand, operation

from deploys.runcache import run_store
from deploys.settings import Settings
from facts.accounts import Accounts

GPU_GROUPS = ("render", "video")
HEAD_USER = "llama-server"  # runs halo-llama-server.service (deploys/head.py)
RPC_USER = "llama-rpc"  # runs halo-rpc@<port>.service (deploys/rpc_worker.py)
COMMENTS = {HEAD_USER: "llama.cpp server", RPC_USER: "llama.cpp RPC server"}


def wanted_users(s: Settings) -> list[str]:
    """The service users a host's roles need, head first.

    >>> from types import SimpleNamespace as S
    >>> wanted_users(S(is_head=True, is_rpc_worker=True)), wanted_users(S(is_head=False, is_rpc_worker=False))
    (['llama-server', 'llama-rpc'], [])
    """
    return [user for user, needed in ((HEAD_USER, s.is_head), (RPC_USER, s.is_rpc_worker)) if needed]


def account_commands(found: dict, groups: tuple[str, ...], users: list[str]) -> list[str]:
    """Commands that make the missing `groups` (system groups) and system `users` (each in `groups`),
    and add existing ones to the groups they lack. `found`: facts.accounts.Accounts.

    >>> account_commands({"groups": ["video"], "users": {"llama-rpc": ["llama-rpc"]}}, GPU_GROUPS,
    ...                  ["llama-rpc", "llama-server"])  # doctest: +NORMALIZE_WHITESPACE
    ['groupadd --system render', 'usermod -a -G render,video llama-rpc',
     "useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin
      --groups render,video --comment 'llama.cpp server' llama-server"]
    """
    commands = [shlex.join(["groupadd", "--system", g]) for g in groups if g not in found["groups"]]
    for user in users:
        member_of = found["users"].get(user)
        if member_of is None:
            commands.append(shlex.join(["useradd", "--system", "--user-group", "--no-create-home",
                                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                                        "--groups", ",".join(groups), "--comment", COMMENTS[user], user]))
        elif lacking := [g for g in groups if g not in member_of]:
            commands.append(shlex.join(["usermod", "-a", "-G", ",".join(lacking), user]))
    return commands


def account_reads(s: Settings) -> list:
    """The one fact service_accounts reads (for a step's prefetch)."""
    return [(Accounts, {"groups": list(GPU_GROUPS), "users": wanted_users(s)})]


@operation()
def system_accounts(groups: tuple[str, ...], users: list[str]):
    """Make the missing groups and service users, and complete their group memberships."""
    commands = account_commands(host.get_fact(Accounts, groups=list(groups), users=list(users)), groups, users)
    if not commands:
        host.noop(f"{' and '.join(groups)} exist" + (f"; {', '.join(users)} in them" if users else ""))
    for command in commands:
        yield StringCommand(command)


def service_accounts(s: Settings) -> None:
    """The render and video groups and this host's service users, added once per run and host."""
    added = run_store("service_accounts")
    if host.name in added:
        return
    added[host.name] = True
    users = wanted_users(s)
    system_accounts(name="Create the render and video groups" + (f" and {', '.join(users)}" if users else ""),
                    groups=GPU_GROUPS, users=users)
