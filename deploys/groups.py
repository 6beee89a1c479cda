"""Give GPU users the render and video groups: the groups exist, each of gpu_users is a member.

    pyinfra inventories/lab.py deploys/groups.py
    # with gpu_users = ["alice"] in the inventory's host data or group_data

Users are appended to the groups (usermod -a -G), keeping all their other groups. A user listed in
gpu_users that does not exist on a host fails that host: this step never creates those users.
The groups themselves, and the service users of the host's roles, come from deploys/accounts.py.
"""

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, deploy, operation
from pyinfra.facts.server import Users

from deploys.accounts import GPU_GROUPS, account_reads, service_accounts
from deploys.common import failure
from deploys.settings import Settings, settings


def missing_memberships(users: dict[str, dict], wanted: list[str], groups=GPU_GROUPS) -> tuple[list[str], dict]:
    """From pyinfra's Users fact: (wanted users absent from the host, {user: groups they still lack}).

    >>> missing_memberships({"alice": {"group": "alice", "groups": ["video"]}}, ["alice", "bob"])
    (['bob'], {'alice': ['render']})
    """
    absent = [user for user in wanted if user not in users]
    lacking = {}
    for user in wanted:
        if user in users:
            have = {users[user]["group"], *users[user]["groups"]}
            if need := [g for g in groups if g not in have]:
                lacking[user] = need
    return absent, lacking


@operation()
def group_members(users: list[str], groups: tuple[str, ...] = GPU_GROUPS):
    """Append existing `users` to `groups` (other groups kept); fail the host when a user does not exist."""
    absent, lacking = missing_memberships(host.get_fact(Users), users, groups)
    if absent:
        yield failure(
            f"gpu_users = {users!r}, but no user {', '.join(absent)} exists on this host; "
            "halo-provision does not create users: create it first (useradd) or remove it from gpu_users")
        return
    if not lacking:
        host.noop(f"{', '.join(users)} already in {' and '.join(groups)}")
        return
    for user, need in lacking.items():
        yield StringCommand("usermod", "-a", "-G", ",".join(need), QuoteString(user))


def reads(s: Settings) -> list:
    """The facts this step reads (for deploys/full.py's one prefetch)."""
    return account_reads(s) + ([(Users, {})] if s.gpu_users else [])


@deploy("Give GPU users the render and video groups")
def gpu_groups() -> None:
    s = settings(host)
    service_accounts(s)
    if s.gpu_users:
        group_members(name="Add gpu_users to the render and video groups", users=s.gpu_users)


if __name__ in ("builtins", "__main__"):
    gpu_groups()
