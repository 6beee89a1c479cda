"""What the verify suite's tests share: the cluster as the inventory describes it, hosts under test.

    from tests.verify.halo import assert_row
    def test_gtt_is_ttm_gib(halo):          # halo: the HaloHost of each --hosts host (conftest.py)
        assert_row(halo, "GTT")             # verify's judgement; its explanation is the message
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pyinfra.api import Config, State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory
from pyinfra_cli.util import parse_cli_arg

from deploys.checks import HostFacts, Report, Row, judge, same_build_row
from deploys.settings import HEAD_GROUP, Settings, SettingsError, validate_inventory
from deploys.topology import rpc_list
from deploys.verify import read_facts

REPO = Path(__file__).resolve().parents[2]
CLUSTER = pytest.StashKey["Cluster"]()


@dataclass
class Cluster:
    """The inventory, every host's validated Settings, and what the run has read and judged so far."""

    inventory: object
    settings: dict[str, Settings]
    facts: dict[str, HostFacts] = field(default_factory=dict)  # by inventory name
    reports: dict[str, Report] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)  # inventory names with a failed test

    def name_of(self, tihost) -> str | None:
        """The inventory name of a testinfra host: the host whose name or ssh_hostname it connects to."""
        target = tihost.backend.get_hostname()
        for h in self.inventory:
            if target in (h.name, h.data.get("ssh_hostname")):
                return h.name
        return None

    def groups(self, name: str) -> tuple[str, ...]:
        return self.settings[name].groups

    @property
    def workers(self) -> list[Settings]:
        """Settings of group rpc_workers, in inventory order."""
        return [self.settings[h.name] for h in self.inventory if "rpc_workers" in h.groups]

    @property
    def heads(self) -> list[str]:
        return [h.name for h in self.inventory if HEAD_GROUP in h.groups]


def load_cluster(path: str, data: list[str]) -> Cluster:
    """The inventory as `pyinfra <path> --data ...` loads it (group_data/ of the repo and beside it)."""
    if not Path(path).exists():
        raise pytest.UsageError(f"--inventory {path}: no such file (set --inventory or HALO_INVENTORY)")
    override = {}
    for item in data:
        key, equals, value = item.partition("=")
        if not equals:
            raise pytest.UsageError(f"--data {item!r}: expected key=value")
        override[key] = parse_cli_arg(value)
    state = State()
    state.cwd = str(REPO)
    with ctx_state.use(state):
        inventory = make_inventory(path, cwd=str(REPO), override_data=override)
    state.init(inventory, Config())
    try:
        return Cluster(inventory, validate_inventory(inventory))
    except SettingsError as e:
        raise pytest.UsageError(f"the data of {path} is invalid:\n{e}") from None


def derive_hosts(config: pytest.Config, cluster: Cluster) -> None:
    """No --hosts: every inventory host, over SSH as pyinfra connects to it.

    Without --ssh-config, an ssh_config made from the inventory (ssh_hostname, ssh_user, ssh_port,
    ssh_key, ssh_known_hosts_file, ssh_strict_host_key_checking; then ~/.ssh/config) names each host
    by its inventory name. `_sudo` on any host turns on --sudo.
    """
    config.option.sudo = config.option.sudo or any(h.data.get("_sudo") for h in cluster.inventory)
    if config.option.ssh_config is not None:
        config.option.hosts = ",".join(
            f"ssh://{h.data.get('ssh_user') + '@' if h.data.get('ssh_user') else ''}"
            f"{h.data.get('ssh_hostname') or h.name}{':' + str(h.data.get('ssh_port')) if h.data.get('ssh_port') else ''}"
            for h in cluster.inventory)
        return
    lines = []
    for h in cluster.inventory:
        lines += [f"Host {h.name}", f"  HostName {h.data.get('ssh_hostname') or h.name}"]
        for option, key in (("User", "ssh_user"), ("Port", "ssh_port"), ("IdentityFile", "ssh_key"),
                            ("UserKnownHostsFile", "ssh_known_hosts_file"),
                            ("StrictHostKeyChecking", "ssh_strict_host_key_checking")):
            if h.data.get(key) is not None:
                lines.append(f"  {option} {h.data.get(key)}")
    lines += ["Host *", "  Include ~/.ssh/config", ""]
    with tempfile.NamedTemporaryFile("w", prefix="halo-verify-ssh-", suffix=".conf", delete=False) as f:
        f.write("\n".join(lines))
    config.option.ssh_config = f.name
    config.add_cleanup(lambda: os.unlink(f.name))
    config.option.hosts = ",".join(f"ssh://{h.name}" for h in cluster.inventory)


# --- reading facts over testinfra ------------------------------------------------------------


def fact_reader(tihost):
    """get_fact(FactClass, **kwargs) for read_facts(): the fact's own command over testinfra, then process()."""

    def get_fact(cls, **kwargs):
        fact = cls()
        command = str(fact.command(**kwargs))
        result = tihost.run("sh -c %s", command)
        if result.rc != 0:  # our facts' commands always exit 0; pyinfra fails the host here
            raise AssertionError(f"fact {cls.__name__} failed ({result.rc}): {command}\n{result.stderr}")
        lines = result.stdout.splitlines()
        return fact.process(lines) if lines else fact.default()

    return get_fact


@dataclass
class HaloHost:
    """One host under test: testinfra's host, its inventory name, Settings, facts and judged report."""

    host: object
    name: str
    settings: Settings
    facts: HostFacts
    report: Report
    cluster: Cluster

    def __repr__(self) -> str:
        return f"HaloHost({self.name})"

    def fact(self, cls, **kwargs):
        return fact_reader(self.host)(cls, **kwargs)

    def row(self, subject: str) -> Row:
        found = [r for r in self.report.rows if r.subject == subject]
        check(found, f"{self.name}: verify has no {subject!r} row: {[r.subject for r in self.report.rows]}")
        return found[0]

    def record(self, row: Row) -> None:
        """Add a row a test judged across hosts (same build) to this host's report and summary line."""
        self.report.rows = [r for r in self.report.rows if r.subject != row.subject] + [row]


def halo_host(config: pytest.Config, tihost) -> HaloHost:
    """The HaloHost of a testinfra host; its facts are read once per run."""
    cluster = config.stash[CLUSTER]
    name = cluster.name_of(tihost)
    if name is None:
        known = ", ".join(f"{h.name} ({h.data.get('ssh_hostname') or '-'})" for h in cluster.inventory)
        pytest.fail(f"{tihost.backend.get_hostname()} is not a host of {config.option.inventory}: expected one "
                    f"of {known} (give --hosts by inventory name or ssh_hostname, or another --inventory)",
                    pytrace=False)
    s = cluster.settings[name]
    if name not in cluster.facts:
        workers = cluster.workers
        cluster.facts[name] = read_facts(s, fact_reader(tihost), workers)
        expected = rpc_list(s, workers) if s.is_head else None
        cluster.reports[name] = judge(cluster.facts[name], s, expected)
    return HaloHost(tihost, name, s, cluster.facts[name], cluster.reports[name], cluster)


def check(ok: object, message: str) -> None:
    """Fail the test with just `message` (what is wrong on which host, and the fix) unless `ok`."""
    if not ok:
        pytest.fail(message, pytrace=False)


def assert_row(halo: HaloHost, subject: str, accept: tuple[str, ...] = ("ok", "info", "WARN")) -> Row:
    """Verify's row for `subject` has an accepted verdict; else fail with verify's explanation."""
    row = halo.row(subject)
    check(row.verdict in accept, f"{halo.name}: {subject} {row.verdict}: {row.value}: {row.why}")
    return row


def same_build(halo: HaloHost, builds: dict[str, dict | None]) -> Row | None:
    row = same_build_row(halo.name, builds, halo.cluster.heads)
    if row is not None:
        halo.record(row)
    return row
