"""deploys/kernel.py, firmware.py and groups.py through the pyinfra CLI over SSH on the lab hosts."""


import pytest

from lab.pyinfra_cli import pyinfra, results
from tests.integration.conftest import assert_no_changes, inventory_with
from lab import lab
from lab.gpu import GpuProfile

HOSTS = ("halo1", "halo2", "halo3")


def output(proc) -> str:
    return proc.stdout + proc.stderr


def failed_hosts(proc, operation: str) -> int:
    """How many hosts the failing operation `operation` (its name, without the deploy prefix) failed."""
    return sum(r["error"] for op, r in results(proc).items() if op.endswith(f"| {operation}"))


# -- kernel ------------------------------------------------------------------------------------


def test_kernel_passes_on_the_lab_and_changes_nothing(lab_inventory):
    proc = pyinfra(lab_inventory, "deploys/kernel.py")
    assert_no_changes(proc)
    release = lab.ssh("halo1", "uname -r").stdout.strip()
    for name in HOSTS:
        assert f"{name}: kernel ok: {release}" in output(proc)


def test_kernel_fails_below_the_minimum_and_warns_below_the_recommended_version(lab_hosts, tmp_path):
    inventory = inventory_with(
        tmp_path,
        halo2={"kernel_min_version": "99.0", "kernel_recommended_version": "99.0"},
        halo3={"kernel_recommended_version": "99.0"},
    )
    proc = pyinfra(inventory, "deploys/kernel.py")
    text = output(proc)
    release = lab.ssh("halo2", "uname -r").stdout.strip()
    assert proc.returncode != 0, text
    assert failed_hosts(proc, "Fail: the kernel is too old") == 1
    assert (f"halo2: kernel {release}: older than kernel_min_version 99.0: ROCm sees only about 15.5 GiB "
            "of GTT") in text
    assert "apt install -t trixie-backports linux-image-amd64" in text  # Debian's remedy
    assert f"halo3: kernel WARN: {release} -> older than 99.0, which has the gfx1151 stability fixes" in text
    assert f"halo1: kernel ok: {release}" in text


# -- firmware ----------------------------------------------------------------------------------


def test_firmware_passes_on_the_lab_and_changes_nothing(lab_inventory):
    proc = pyinfra(lab_inventory, "deploys/firmware.py")
    assert_no_changes(proc)
    for name in HOSTS:
        assert f"{name}: MES firmware ok: 0x80" in output(proc)
        assert f"{name}: firmware info: no firmware package -> package date not compared" in output(proc)


def test_firmware_fails_mes_0x83_and_says_when_mes_was_not_checked(lab_inventory, set_gpu):
    set_gpu("halo2", GpuProfile(mes_version=0x83))
    set_gpu("halo3", GpuProfile(mes_version=None))
    proc = pyinfra(lab_inventory, "deploys/firmware.py")
    text = output(proc)
    assert proc.returncode != 0, text
    assert failed_hosts(proc, "Fail: the GPU firmware is unfit") == 1
    assert "halo2: MES firmware 0x83: MES 0x83 (linux-firmware 20251125) hangs gfx1151" in text
    assert "firmware-amd-graphics" in text  # Debian's remedy
    assert "halo3: MES firmware WARN: not checked -> debugfs not readable" in text
    assert "the GPU firmware is unverified" in text
    assert "halo1: MES firmware ok: 0x80" in text


# -- groups ------------------------------------------------------------------------------------


@pytest.fixture
def gpu_tester(lab_hosts):
    """A user on halo2 that already belongs to another group (halo-team); removed afterwards."""
    lab.ssh("halo2", "groupadd halo-team && useradd -M -G halo-team gpu-tester")
    yield "gpu-tester"
    lab.ssh("halo2", "userdel gpu-tester; groupdel halo-team", check=False)


def test_groups_appends_render_and_video_and_a_second_run_changes_nothing(gpu_tester, tmp_path):
    inventory = inventory_with(tmp_path, halo2={"gpu_users": [gpu_tester]})
    first = pyinfra(inventory, "deploys/groups.py")
    assert first.returncode == 0, output(first)
    groups = set(lab.ssh("halo2", f"id -nG {gpu_tester}").stdout.split())
    assert groups == {gpu_tester, "halo-team", "render", "video"}
    for name in HOSTS:  # system groups (GID below 1000) everywhere
        for group in ("render", "video"):
            gid = int(lab.ssh(name, f"getent group {group}").stdout.split(":")[2])
            assert gid < 1000, (name, group, gid)
    assert_no_changes(pyinfra(inventory, "deploys/groups.py"))


def test_groups_fails_a_host_whose_gpu_user_does_not_exist(lab_hosts, tmp_path):
    inventory = inventory_with(tmp_path, halo3={"gpu_users": ["no-such-user"]})
    proc = pyinfra(inventory, "deploys/groups.py")
    text = output(proc)
    assert proc.returncode != 0, text
    assert failed_hosts(proc, "Add gpu_users to the render and video groups") == 1
    assert "halo3: gpu_users = ['no-such-user'], but no user no-such-user exists on this host" in text
    assert "does not create users" in text
    assert lab.ssh("halo3", "id no-such-user", check=False).returncode != 0  # not created


# -- the head's route to its RPC workers -----------------------------------------------------------


def test_a_head_whose_route_to_a_worker_leaves_from_another_address_is_stopped(lab_inventory):
    """halo1's route to halo2 leaves from a second address of halo1, not from its rpc_bind_address, the
    one the workers' firewalls admit: the head step reads the route (ip route get) and stops the run
    before any change, naming the address to set."""
    halo1, halo2 = (next(h.address for h in lab.load_hosts() if h.name == n) for n in ("halo1", "halo2"))
    second = halo1.rsplit(".", 1)[0] + ".211"
    device = lab.ssh("halo1", f"ip -o route get {halo2}").stdout.split(" dev ")[1].split()[0]
    lab.ssh("halo1", f"ip addr add {second}/32 dev {device} && ip route add {halo2}/32 dev {device} src {second}")
    try:
        proc = pyinfra(lab_inventory, "deploys/head.py", "--limit", "halo1")
    finally:
        lab.ssh("halo1", f"ip route del {halo2}/32; ip addr del {second}/32 dev {device}", check=False)
    assert proc.returncode != 0
    assert (f"halo1: rpc_bind_address = '{halo1}' is invalid: the RPC workers' firewalls admit head halo1 from "
            f"{halo1} (its rpc_bind_address), but halo1's route to halo2 ({halo2}) leaves from {second}, so halo2 "
            f"would refuse it; expected halo1's address toward the workers, '{second}'.") in output(proc), output(proc)
    assert "halo3" not in output(proc).split("is invalid:")[1].split("\n")[0]  # halo3's route is halo1's own address
    assert "--> Starting operation" not in output(proc)
