"""The verify suite (`pytest --hosts=... tests/verify`) run as users run it, against the lab.

The host layer (tests/verify/test_host.py, test_gpu.py) runs on the booted lab hosts; the lab's fake
/proc/cmdline gives them the kernel arguments a tuned host boots with (the hosts share this
machine's kernel). Expectations come from the inventory: a temporary copy with other data changes
what the suite wants.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.pyinfra_cli import REPO, pyinfra
from lab import lab
from lab.gpu import GpuProfile

HOST_LAYER = ["tests/verify/test_host.py", "tests/verify/test_gpu.py"]
PAGES_120 = 120 * 262144
TUNED_CMDLINE = (f"BOOT_IMAGE=/boot/vmlinuz-6.18.4-amd64 root=LABEL=halo ro quiet "
                 f"ttm.pages_limit={PAGES_120} ttm.page_pool_size={PAGES_120} amd_iommu=off")
USER = "halo"  # the gpu_users of the tuned lab


def verify_suite(*args: str, inventory: str | None = None, hosts: str | None = None) -> subprocess.CompletedProcess:
    """`pytest --hosts=<lab hosts> --ssh-config=<lab> --inventory=<inventory> <args>` from the repo root."""
    hosts = hosts or (lab.STATE / "hosts.txt").read_text().strip()
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--hosts={hosts}",
           f"--ssh-config={lab.STATE / 'ssh_config'}", f"--inventory={inventory or lab.STATE / 'inventory.py'}",
           *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, NO_COLOR="1"))


def summary_line(output: str, name: str) -> list[str]:
    """The cells of one host's line in the suite's closing summary."""
    block = output.split("one line per host")[-1]
    return next(line.split() for line in block.splitlines() if line.startswith(name + " "))


@pytest.fixture
def tuned_lab(lab_hosts, set_gpu, tmp_path: Path) -> str:
    """The lab as deploys/grub.py and deploys/groups.py leave it after a reboot; returns its inventory.

    The inventory is the lab's with gpu_users = [USER]; groups.py puts USER into render and video.
    """
    for host in lab_hosts:
        set_gpu(host.name, GpuProfile(cmdline=TUNED_CMDLINE))
        lab.ssh(host, f"id {USER} >/dev/null 2>&1 || useradd --no-create-home {USER}")
    inventory = tmp_path / "inventory.py"
    text = (lab.STATE / "inventory.py").read_text()
    inventory.write_text(text.replace("'rpc_bind_address':", f"'gpu_users': {[USER]!r}, 'rpc_bind_address':"))
    pyinfra(str(inventory), "deploys/groups.py", check=True)
    return str(inventory)


def test_the_suite_passes_on_a_tuned_lab_and_writes_the_report(tuned_lab, tmp_path: Path):
    report = tmp_path / "verify.json"
    proc = verify_suite(*HOST_LAYER, f"--report={report}", inventory=tuned_lab)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert " passed" in output and "failed" not in output
    for name in ("halo1", "halo2", "halo3"):
        cells = summary_line(output, name)
        assert cells[1:3] == ["120.00", "GiB"] and cells[-1] == "PASS", cells
    hosts = json.loads(report.read_text())["hosts"]
    assert [(h["host"], h["result"]) for h in hosts] == [("halo1", "PASS"), ("halo2", "PASS"), ("halo3", "PASS")]
    assert hosts[0]["cells"]["pages_limit"] == {"value": str(PAGES_120), "verdict": "ok"}


def test_a_host_with_stock_gtt_fails_with_the_reason(tuned_lab, set_gpu):
    set_gpu("halo2", GpuProfile(gtt_total=16642998272, pages_limit=4063232, cmdline=TUNED_CMDLINE))
    proc = verify_suite(*HOST_LAYER, inventory=tuned_lab)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "halo2: GTT FAIL: 15.50 GiB (wanted 120 GiB" in output
    assert "kernel is too old" in output and "reboot pending" in output
    assert "FAILED tests/verify/test_gpu.py::test_gtt_is_ttm_gib[ssh://halo2]" in output
    assert "test_gtt_is_ttm_gib[ssh://halo1]" not in output and "test_gtt_is_ttm_gib[ssh://halo3]" not in output
    assert summary_line(output, "halo2")[-1] == "FAIL" and summary_line(output, "halo1")[-1] == "PASS"


def test_a_user_missing_from_render_fails_with_the_fix(tuned_lab):
    lab.ssh("halo3", f"gpasswd -d {USER} render")
    proc = verify_suite("tests/verify/test_host.py", "-k", "gpu_users", inventory=tuned_lab)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert f"halo3: not in render and video: {USER} lacks render: run deploys/groups.py" in output
    assert "1 failed, 2 passed" in output


def test_the_expectation_comes_from_the_inventory_data(tuned_lab, tmp_path: Path):
    inventory = Path(tuned_lab)
    inventory.write_text(inventory.read_text().replace(
        "'rpc_bind_address': '" + lab.SUBNET + ".13'", "'rpc_bind_address': '" + lab.SUBNET + ".13', 'ttm_gib': 96"))
    proc = verify_suite("tests/verify/test_gpu.py", "-k", "gtt or pages_limit", inventory=str(inventory))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "halo3: GTT FAIL: 120.00 GiB (wanted 96 GiB: ttm_gib)" in output
    assert f"halo3: TTM pages_limit FAIL: {PAGES_120} (ttm): wanted {96 * 262144}" in output
    assert "2 failed, 4 passed" in output

    # The same with pyinfra's --data for every host.
    proc = verify_suite("tests/verify/test_gpu.py", "-k", "gtt", "--data", "ttm_gib=96", inventory=tuned_lab)
    assert "3 failed" in proc.stdout, proc.stdout + proc.stderr


def test_gpu_checks_skip_without_an_amdgpu_card_but_the_hip_backend_wants_one(tuned_lab, set_gpu):
    set_gpu("halo2", GpuProfile(present=False, cmdline=TUNED_CMDLINE))
    proc = verify_suite("tests/verify/test_gpu.py", "tests/verify/test_host.py", "-k", "gpu or amdgpu", "-rs",
                        inventory=tuned_lab)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert output.count("halo2 has no amdgpu card (no /sys/class/drm/card*/device driven by amdgpu)") == 5
    assert "halo2: GPU FAIL: no amdgpu card: no card in /sys/class/drm is driven by amdgpu" in output
    assert "1 failed, 15 passed, 5 skipped" in output


def test_a_non_root_user_verifies_with_sudo(lab_hosts):
    lab.ssh("halo1", "id verify >/dev/null 2>&1 || useradd -m -s /bin/bash verify; install -d -o verify -m 700 "
                     "~verify/.ssh && install -o verify -m 600 /root/.ssh/authorized_keys ~verify/.ssh/ && "
                     "echo 'verify ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/verify")
    proc = verify_suite("tests/verify/test_host.py", "tests/verify/test_gpu.py", "-k", "kernel_release or mes",
                        "--sudo", "-v", hosts="ssh://verify@halo1")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "test_mes_firmware_is_not_the_bad_one[ssh://halo1] PASSED" in output


def test_hosts_come_from_the_inventory_when_none_are_given(lab_hosts):
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--inventory={lab.STATE / 'inventory.py'}",
           "tests/verify/test_host.py", "-k", "kernel_release", "-v"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    for host in lab_hosts:  # through the inventory's ssh_hostname, key and known_hosts file
        assert f"test_kernel_release_is_at_least_kernel_min_version[ssh://{host.name}] PASSED" in output


def test_pyinfra_verify_prints_the_summary_and_writes_markdown(lab_hosts, tmp_path: Path, monkeypatch):
    report = tmp_path / "verify.md"
    monkeypatch.setenv("HALO_VERIFY_REPORT", str(report))
    proc = pyinfra(str(lab.STATE / "inventory.py"), "deploys/verify.py")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Verify summary:" in output
    text = report.read_text()
    assert text.startswith("| host | GTT | VRAM carve-out | pages_limit |")
    for name in ("halo1", "halo2", "halo3"):
        assert f"| {name} | 120.00 GiB | 0.50 GiB | {PAGES_120} |" in text
        assert f"- {name}: llama.cpp WARN not built:" in text


# --- on the cluster deploys/full.py provisioned (llama.cpp, RPC workers, head) -------------------


@pytest.fixture
def tuned_cluster(cluster):
    """The provisioned cluster, booted with the kernel arguments (the lab's fake /proc/cmdline)."""
    for host in cluster.hosts:
        lab.set_gpu(host.name, GpuProfile(cmdline=TUNED_CMDLINE))
    yield cluster
    for host in cluster.hosts:
        lab.set_gpu(host.name, GpuProfile())


def cluster_suite(cluster, *args: str) -> subprocess.CompletedProcess:
    """The suite with the --data the cluster was deployed with."""
    return verify_suite(*args, *(f"--data={k}={v}" for k, v in cluster.data.items()), inventory=cluster.inventory)


def test_the_whole_suite_passes_on_the_provisioned_cluster(tuned_cluster):
    proc = cluster_suite(tuned_cluster, "tests/verify")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "does not exist yet" not in output  # every step's tests ran
    for host in tuned_cluster.hosts:
        line = " ".join(summary_line(output, host.name))
        assert f"{host.address}:50052" in line and line.endswith("PASS"), line
    assert "/health 200" in " ".join(summary_line(output, "halo1"))


def test_a_stopped_rpc_unit_fails_with_its_journal(tuned_cluster):
    lab.ssh("halo3", "systemctl stop halo-rpc@50052.service")
    try:
        proc = cluster_suite(tuned_cluster, "tests/verify/test_rpc.py", "-k", "active or listen")
    finally:
        lab.ssh("halo3", "systemctl start halo-rpc@50052.service")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "halo3: halo-rpc@50052.service is inactive and enabled: run deploys/rpc_worker.py" in output
    assert "Stopped" in output.split("journalctl -u halo-rpc@50052.service:")[1]  # the unit's own journal
    assert f"halo3: nothing listens on {lab.SUBNET}.13:50052 (rpc_bind_address)" in output
    assert "2 failed, 4 passed" in output


def test_a_worker_on_another_build_fails(tuned_cluster):
    # halo3's `current` points at a build with another id (the stamp is all the check reads).
    prefix = "/opt/llama.cpp"
    build = lab.ssh("halo3", f"basename $(readlink -f {prefix}/current)").stdout.strip()
    other = "f" * 12 + build[12:]
    lab.ssh("halo3", f"mkdir -p {prefix}/builds/{other} && sed 's/{build}/{other}/g' {prefix}/current/halo-build.json"
                     f" > {prefix}/builds/{other}/halo-build.json && ln -sfn builds/{other} {prefix}/current")
    try:
        proc = cluster_suite(tuned_cluster, "tests/verify/test_llama_cpp.py")
    finally:
        lab.ssh("halo3", f"ln -sfn builds/{build} {prefix}/current && rm -rf {prefix}/builds/{other}")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert (f"halo3: llama.cpp build {other}: halo1 (head) serves build {build}: RPC needs one llama.cpp build "
            "on every host") in output
    # its RPC server still runs the build it started with, which is not `current` any more
    assert f"halo3: running build halo-rpc@50052.service runs {build}: current is {other}" in output
    assert "2 failed, 7 passed" in output


def head_serves_again() -> None:
    """Restart llama-server on halo1 and wait for /health 200 (its RPC links are new then)."""
    url = f"http://{lab.running_host('halo1').address}:8080/health"
    lab.ssh("halo1", "systemctl restart halo-llama-server.service && for i in $(seq 120); do "
                     f"[ \"$(curl -s -o /dev/null -w '%{{http_code}}' {url})\" = 200 ] && exit 0; "
                     "sleep 1; done; exit 1", timeout=180)


def test_a_head_that_lost_its_link_to_a_restarted_worker_fails_with_the_fix(tuned_cluster):
    """halo3's RPC server restarts: llama-server's connection to it is closed and never made again until
    llama-server restarts; verify reads the head's established connections and says so."""
    lab.ssh("halo3", "systemctl restart halo-rpc@50052.service")
    try:
        proc = cluster_suite(tuned_cluster, "tests/verify/test_head.py", "-k", "connected")
    finally:
        head_serves_again()
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert (f"halo1: RPC links FAIL: 1/2 RPC servers connected: {lab.SUBNET}.12:50052: llama-server is not "
            f"connected to {lab.SUBNET}.13:50052") in output
    assert "To reconnect now: systemctl restart halo-llama-server.service" in output
    assert cluster_suite(tuned_cluster, "tests/verify/test_head.py", "-k", "connected").returncode == 0


def test_a_worker_serving_another_build_than_the_head_fails_with_the_fix(tuned_cluster):
    """halo3's RPC server runs a copy of the build under another id (what another commit or flags give):
    the head's cluster build check names that server, its build and protocol version, and the fix."""
    prefix = "/opt/llama.cpp"
    build = lab.ssh("halo3", f"basename $(readlink -f {prefix}/current)").stdout.strip()
    other = "e" * 12 + build[12:]
    lab.ssh("halo3", f"cp -a {prefix}/builds/{build} {prefix}/builds/{other} && sed -i 's/{build}/{other}/g' "
                     f"{prefix}/builds/{other}/halo-build.json && ln -sfn builds/{other} {prefix}/current && "
                     "systemctl restart halo-rpc@50052.service")
    try:
        proc = cluster_suite(tuned_cluster, "tests/verify/test_head.py", "-k", "one_build")
    finally:
        lab.ssh("halo3", f"ln -sfn builds/{build} {prefix}/current && systemctl restart halo-rpc@50052.service && "
                         f"rm -rf {prefix}/builds/{other}")
        head_serves_again()
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert (f"halo1: cluster build llama-server {build}, RPC protocol 7.0.0: halo3 halo-rpc@50052.service runs "
            f"build {other} (RPC protocol 7.0.0): another commit or flags than llama-server's") in output
    assert "Run deploys/full.py" in output


def test_pyinfra_verify_judges_the_rpc_servers_and_the_head(tuned_cluster):
    proc = tuned_cluster.run("deploys/verify.py")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    summary = output.split("Verify summary:")[1]
    for host in tuned_cluster.hosts:
        assert f"{host.name}: PASS" in output
        line = next(line for line in summary.splitlines() if line.split()[:1] == [host.name])
        assert f"{host.address}:50052" in line and line.rstrip().endswith("PASS"), line
    assert "/health 200" in next(line for line in summary.splitlines() if line.startswith("halo1 "))
