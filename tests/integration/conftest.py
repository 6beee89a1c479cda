"""Fixtures for tests that apply deploys to the booted lab hosts over SSH.

Two lab shapes: `lab_hosts` (halo1 Debian 12, halo2 Debian 13, halo3 Debian 12) for the host steps,
and `cluster` (three Debian 12 hosts that build llama.cpp once and serve a model through RPC). The
lab is (re)started only when the running one has another shape, tests that need the cluster run
last, and the lab is stopped at the end of the session. Tests that change a host's fake GPU
restore the default profile afterwards.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lab import lab
from lab.gpu import GpuProfile
from lab.pyinfra_cli import pyinfra, results

LAB_HOSTS = ["halo1:12", "halo2:13", "halo3:12"]


def pytest_collection_modifyitems(items):
    """Tests on the cluster run after all others: the lab changes shape only once."""
    items.sort(key=lambda item: "cluster" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def lab_session():
    """Stops the lab after the session, whichever shape it had."""
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("the lab needs root (systemd-nspawn, network namespaces, mounts)")
    yield
    lab.stop()


@pytest.fixture
def lab_hosts(lab_session):
    """halo1 (Debian 12), halo2 (13), halo3 (12), booted (reused when already running)."""
    return lab.ensure(lab.parse_host_args(LAB_HOSTS))


@pytest.fixture
def lab_inventory(lab_hosts) -> str:
    return str(lab.STATE / "inventory.py")


@pytest.fixture
def set_gpu(lab_hosts):
    """set_gpu("halo2", GpuProfile(gtt_total=...)) for one test; the default comes back afterwards."""
    changed = []

    def apply(name: str, profile: GpuProfile) -> None:
        lab.set_gpu(name, profile)
        changed.append(name)

    yield apply
    for name in changed:
        lab.set_gpu(name, GpuProfile())


def assert_no_changes(proc: subprocess.CompletedProcess) -> None:
    """A second run: it succeeded and no operation changed anything on any host."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    changed = {op: r for op, r in results(proc).items() if r["success"] or r["error"]}
    assert not changed, f"operations changed something on the second run: {changed}\n{output}"


class Cluster:
    """The lab cluster after deploys/full.py: its inventory, the data the run used, and that run."""

    def __init__(self, hosts, inventory: str, data: dict[str, str], first_run: subprocess.CompletedProcess):
        self.hosts, self.inventory, self.data, self.first_run = hosts, inventory, data, first_run

    def run(self, deploy: str, inventory: str | None = None, **extra_data: str) -> subprocess.CompletedProcess:
        """pyinfra <inventory> <deploy> with the cluster's data (plus extra_data)."""
        return pyinfra(inventory or self.inventory, deploy, data={**self.data, **extra_data})


@pytest.fixture(scope="session")
def cluster(lab_session):
    """Three Debian 12 lab hosts provisioned by deploys/full.py with the CPU backend.

    The llama.cpp source (and the model) are served on the lab bridge (lab/cluster.py).
    """
    from lab.cluster import HOSTS, cluster_inputs

    hosts = lab.ensure(lab.parse_host_args(HOSTS))
    inventory = str(lab.STATE / "inventory.py")
    with cluster_inputs() as data:
        first = pyinfra(inventory, "deploys/full.py", data=data)
        assert first.returncode == 0, f"deploys/full.py failed on the lab cluster:\n{first.stdout}\n{first.stderr}"
        yield Cluster(hosts, inventory, data, first)


def inventory_with(tmp_path: Path, **host_data: dict) -> str:
    """The lab inventory with extra data for some hosts: inventory_with(tmp_path, halo2={"rpc_port": 1})."""
    text = (lab.STATE / "inventory.py").read_text()
    for name, data in host_data.items():
        entry = f"({name!r}, {{"
        assert text.count(entry) == 1, f"{name} not in the lab inventory"
        text = text.replace(entry, entry + ", ".join(f"{k!r}: {v!r}" for k, v in data.items()) + ", ")
    path = tmp_path / "inventory.py"
    path.write_text(text)
    return str(path)
