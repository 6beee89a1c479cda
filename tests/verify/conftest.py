"""The verify suite: check a provisioned cluster against the inventory and data the deploy used.

    pytest --hosts=ssh://root@halo1,ssh://root@halo2 tests/verify
    pytest tests/verify --inventory inventories/mycluster.py          # hosts taken from the inventory
    pytest tests/verify --hosts=ssh://admin@halo1 --sudo --report verify.md

Expectations come from the inventory (`--inventory`, default $HALO_INVENTORY or inventories/lab.py)
and group_data/, loaded as pyinfra's CLI loads them and validated by deploys/settings/; pass the
same `--data key=value` you deployed with. Facts are read by running each pyinfra fact's command
through testinfra and its process(), and judged by deploys/checks.py: one code path for pyinfra and
pytest. A testinfra host maps to the inventory host with that name or ssh_hostname; tests marked
`hosts_in("head")` or `hosts_in("rpc_workers")` only run for hosts of that group. At the end, one
summary line per host (and `--report FILE`: Markdown for .md, else JSON).
"""

from __future__ import annotations

import os

import pytest
import testinfra

from deploys.checks import HostFacts
from deploys.report import summary, summary_text, write_summary
from tests.verify.halo import CLUSTER, HaloHost, derive_hosts, halo_host, load_cluster


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("halo-provision verify")
    group.addoption("--inventory", default=os.environ.get("HALO_INVENTORY", "inventories/lab.py"),
                    help="pyinfra inventory the cluster was deployed with (default: $HALO_INVENTORY or "
                         "inventories/lab.py); --hosts defaults to its hosts")
    group.addoption("--data", action="append", default=[], metavar="KEY=VALUE",
                    help="override host data, as pyinfra's --data (repeat it)")
    group.addoption("--report", metavar="FILE", help="write the per-host summary: Markdown for .md, else JSON")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hosts_in(group): run the test only for hosts of this inventory group")
    cluster = load_cluster(config.option.inventory, config.option.data)
    config.stash[CLUSTER] = cluster
    if config.option.hosts is None:
        derive_hosts(config, cluster)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked hosts_in(group) is deselected for the hosts not in that group."""
    cluster = config.stash[CLUSTER]
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("hosts_in")
        tihost = getattr(item, "callspec", None) and item.callspec.params.get("_testinfra_host")
        name = cluster.name_of(tihost) if tihost else None
        wrong = marker and name and marker.args[0] not in cluster.groups(name)
        (drop if wrong else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="module")
def halo(request: pytest.FixtureRequest, host) -> HaloHost:
    return halo_host(request.config, host)


@pytest.fixture(scope="session")
def all_hosts(request: pytest.FixtureRequest) -> dict[str, object]:
    """{inventory name: testinfra host} of every host in this run (--hosts)."""
    o = request.config.option
    hosts = testinfra.get_hosts(o.hosts.split(","), connection=o.connection, ssh_config=o.ssh_config,
                                ssh_identity_file=o.ssh_identity_file, sudo=o.sudo, sudo_user=o.sudo_user,
                                ansible_inventory=o.ansible_inventory, force_ansible=o.force_ansible)
    cluster = request.config.stash[CLUSTER]
    return {cluster.name_of(h): h for h in hosts if cluster.name_of(h)}


@pytest.fixture(scope="session")
def host_facts(request: pytest.FixtureRequest, all_hosts) -> dict[str, HostFacts]:
    """What verify read of every host in this run (HostFacts), by inventory name."""
    return {name: halo_host(request.config, tihost).facts for name, tihost in all_hosts.items()}


@pytest.fixture(scope="session")
def builds(host_facts) -> dict[str, dict | None]:
    """LlamaCppInstall of every host in this run."""
    return {name: facts.llama_cpp for name, facts in host_facts.items()}


@pytest.fixture(autouse=True)
def _gpu_hosts_only(request: pytest.FixtureRequest) -> None:
    """Tests marked gpu skip on a host without an amdgpu card (the lab's fake sysfs has one)."""
    if request.node.get_closest_marker("gpu") is None:
        return
    halo = request.getfixturevalue("halo")
    if not halo.facts.gpu_memory:
        pytest.skip(f"{halo.name} has no amdgpu card (no /sys/class/drm/card*/device driven by amdgpu): "
                    "GPU checks need the hardware (test_amdgpu_card_for_the_backend says whether it should have one)")


# --- the summary ----------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    report = yield
    tihost = getattr(item, "callspec", None) and item.callspec.params.get("_testinfra_host")
    if report.failed and tihost is not None:
        cluster = item.config.stash[CLUSTER]
        cluster.failed.add(cluster.name_of(tihost) or tihost.backend.get_hostname())
    return report


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    cluster = config.stash.get(CLUSTER, None)
    if cluster is None or not cluster.reports:
        return
    names = [h.name for h in cluster.inventory if h.name in cluster.reports]
    results = {n: "FAIL" if n in cluster.failed else "PASS" for n in names}
    entries = summary([cluster.reports[n] for n in names], results)
    terminalreporter.write_sep("=", "halo-provision verify: one line per host")
    terminalreporter.write_line(summary_text(entries))
    if config.option.report:
        write_summary(config.option.report, entries)
        terminalreporter.write_line(f"report written to {config.option.report}")
