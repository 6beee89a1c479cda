"""Which system groups and users exist, and the groups each user is in: one command for all of them.

Usage::

    from facts.accounts import Accounts
    host.get_fact(Accounts, groups=["render", "video"], users=["llama-rpc", "llama-server"])
    # {"groups": ["render", "video"], "users": {"llama-rpc": ["llama-rpc", "render", "video"]}}
"""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase

from facts import sections


class Accounts(FactBase[dict]):
    """Of `groups`, those that exist; of `users`, those that exist, each with all its groups (`id -nG`).

    .. code:: python

        {"groups": ["render", "video"], "users": {"llama-rpc": ["llama-rpc", "render", "video"]}}

    Default (no output): {"groups": [], "users": {}}: nothing exists.
    """

    @staticmethod
    def default() -> dict:
        return {"groups": [], "users": {}}

    def command(self, groups: list[str], users: list[str]) -> str:
        names = " ".join(shlex.quote(g) for g in groups)
        found = "".join(f"u={shlex.quote(u)}; id -nG \"$u\" >/dev/null 2>&1 && echo \"$u\" $(id -nG \"$u\"); "
                        for u in users)
        return f"echo '## groups'; getent group {names} | cut -d: -f1; echo '## users'; {found}true"

    def process(self, output: list[str]) -> dict:
        found = sections(output)
        users = {}
        for line in found.get("users", []):
            if line.split():  # a blank line (cut short) names no one
                name, *member_of = line.split()
                users[name] = member_of
        return {"groups": [g.strip() for g in found.get("groups", []) if g.strip()], "users": users}
