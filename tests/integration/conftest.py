"""Fixtures for tests that apply deploys to the booted lab hosts over SSH.

Two lab shapes: `lab_hosts` (halo1 Debian 12, halo2 Debian 13, halo3 Debian 12) for the host steps,
and `cluster` (three Debian 12 hosts that build llama.cpp once and serve a model through RPC). The
lab is (re)started only when the running one has another shape, tests that need the cluster run
last, and the lab is stopped at the end of the session. Tests that change a host's fake GPU
restore the default profile afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab import lab
from tests.lab.gpu import GpuProfile

REPO = Path(__file__).resolve().parents[2]
LAB_HOSTS = ["halo1:12", "halo2:13", "halo3:12"]


def pyinfra(*args: str, data: dict[str, str] | None = None, check: bool = False,
            timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run the pyinfra CLI from the repo root, as a user would; returns its output and exit code."""
    cmd = [sys.executable, "-m", "pyinfra", "-y"]
    for key, value in (data or {}).items():
        cmd += ["--data", f"{key}={value}"]
    proc = subprocess.run(cmd + list(args), cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONUNBUFFERED="1", TERM="dumb", NO_COLOR="1"))
    if check and proc.returncode != 0:
        raise AssertionError(f"pyinfra {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


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


def pyinfra_facts(inventory: str, *fact_names: str, limit: str | None = None) -> dict[str, dict]:
    """`pyinfra INVENTORY fact ...` through the CLI: {fact name: {host: value}}."""
    args = [inventory, "fact", *fact_names] + (["--limit", limit] if limit else [])
    proc = pyinfra(*args, check=True)
    output = proc.stdout + proc.stderr
    found = {}
    for chunk in output.split("--> Fact data for: ")[1:]:
        name, _, body = chunk.partition("\n")
        found[name.strip()] = json.JSONDecoder().raw_decode(body.lstrip())[0]
    return found


def results(proc: subprocess.CompletedProcess) -> dict[str, dict[str, int]]:
    """pyinfra's closing Results table: {operation: {"success": n, "error": n, "no_change": n}}."""
    output = proc.stdout + proc.stderr
    table = output.split("--> Results:")[-1].split("--> Disconnecting")[0].splitlines()[2:]
    found = {}
    for line in table:
        cells = line.split()
        if len(cells) < 4:
            continue
        counts = [0 if c == "-" else int(c) for c in cells[-3:]]
        found[" ".join(cells[:-4])] = dict(zip(("success", "error", "no_change"), counts))
    return found


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

    The llama.cpp source (and the model) are served on the lab bridge (tests/lab/cluster.py).
    """
    from tests.lab.cluster import HOSTS, cluster_inputs

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
