"""deploys/grub.py with reboot_allowed on a Debian 12 VM that boots through GRUB: after the reboot,
/proc/cmdline has the arguments. Slow (minutes): `pytest -m slow tests/integration/test_grub_vm.py`.

The lab's containers share this machine's kernel, so only a VM can show the new arguments in
/proc/cmdline. The VM is QEMU on the lab's cached Debian 12 rootfs, which has a kernel, an
initramfs and GRUB: a disk with an MBR partition table and the rootfs as ext4 in partition 1.
The first boot loads the kernel directly and runs grub-install and update-grub inside the VM.
From then on, every boot goes SeaBIOS -> GRUB -> grub.cfg, the same as a BIOS box.

QEMU runs with TCG (software emulation). This machine's /dev/kvm is PVM (kvm_pvm), and a Debian
kernel hangs under it right after "Probing EDD". The VM has only user networking, and its SSH is
forwarded to 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from lab.pyinfra_cli import pyinfra
from tests.integration.conftest import assert_no_changes
from lab import lab

pytestmark = pytest.mark.slow

DISK_BYTES = 4 << 30
PART_START = 2048  # sectors
KERNEL_ARGS = f"ttm.pages_limit={4 * 262144} ttm.page_pool_size={4 * 262144} amd_iommu=off"
BOOT_TIMEOUT_S = 600


def make_disk(rootfs: Path, work: Path, pubkey: str) -> Path:
    """A raw disk: MBR, partition 1 = ext4 made from a copy of `rootfs` set up to boot as a VM."""
    root = work / "root"
    subprocess.run(["cp", "-a", f"{rootfs}/.", str(root)], check=True)
    (root / "etc/fstab").write_text("/dev/vda1 / ext4 errors=remount-ro 0 1\n")
    (root / "etc/hostname").write_text("halo-vm\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost halo-vm\n")
    (root / "etc/systemd/network/80-dhcp.network").write_text("[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    (wants / "systemd-networkd.service").symlink_to("/lib/systemd/system/systemd-networkd.service")
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    (root / "root/.ssh/authorized_keys").write_text(pubkey)
    subprocess.run(["ssh-keygen", "-A", "-f", str(root)], check=True, capture_output=True)
    grub = root / "etc/default/grub"  # a serial console, so console.log shows GRUB and the boot
    grub.write_text(grub.read_text().replace('GRUB_CMDLINE_LINUX=""', 'GRUB_CMDLINE_LINUX="console=ttyS0"')
                    .replace("GRUB_TIMEOUT=5", "GRUB_TIMEOUT=1") + 'GRUB_TERMINAL="serial"\n')
    disk = work / "disk.img"
    sectors = DISK_BYTES // 512 - PART_START
    with open(disk, "wb") as f:
        f.truncate(DISK_BYTES)
        f.seek(440)
        f.write(os.urandom(4) + b"\0\0" + struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff",
                                                       PART_START, sectors))
        f.seek(510)
        f.write(b"\x55\xaa")
    subprocess.run(["mkfs.ext4", "-q", "-E", f"offset={PART_START * 512}", "-d", str(root), str(disk),
                    f"{sectors // 2}k"], check=True)
    shutil.rmtree(root)
    return disk


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Vm:
    """One QEMU process for the disk; `ssh` runs a command in the VM."""

    def __init__(self, work: Path, disk: Path, port: int, key: Path):
        self.work, self.disk, self.port, self.key = work, disk, port, key
        self.proc: subprocess.Popen | None = None
        self.last_error = ""

    def boot(self, kernel: Path | None = None, initrd: Path | None = None) -> float:
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1024",
               "-display", "none", "-serial", f"file:{self.work / 'console.log'}",
               "-drive", f"file={self.disk},format=raw,if=virtio",
               "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:22", "-device", "virtio-net-pci,netdev=n0"]
        if kernel:
            cmd += ["-kernel", str(kernel), "-initrd", str(initrd), "-append", "root=/dev/vda1 ro console=ttyS0"]
        started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.wait_ssh()
        return time.monotonic() - started

    def ssh(self, command: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ssh", "-i", str(self.key), "-p", str(self.port), "-o", f"UserKnownHostsFile={self.work / 'known_hosts'}",
             "-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
             "root@127.0.0.1", command], capture_output=True, text=True, check=check, timeout=timeout)

    def wait_ssh(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"qemu exited:\n{self.console()}")
            probe = self.ssh("true", check=False, timeout=30)
            if probe.returncode == 0:
                return
            self.last_error = probe.stderr
            time.sleep(2)
        raise AssertionError(f"the VM did not answer SSH within {BOOT_TIMEOUT_S} s ({self.last_error}):\n"
                             f"{self.console()}")

    def wait_exit(self, timeout: float = 300) -> None:
        self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def console(self) -> str:
        path = self.work / "console.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.fixture
def grub_vm(tmp_path):
    """A Debian 12 VM whose disk boots through GRUB, answering SSH on a local port."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs qemu-system-x86_64 (apt install qemu-system-x86)")
    rootfs = lab.ensure_rootfs("12")
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    disk = make_disk(rootfs, tmp_path, (tmp_path / "id_ed25519.pub").read_text())
    vm = Vm(tmp_path, disk, free_port(), key)
    boot = rootfs / "boot"
    try:
        seconds = vm.boot(next(boot.glob("vmlinuz-*")), next(boot.glob("initrd.img-*")))
        print(f"vm: first boot (kernel loaded by QEMU) answered SSH after {seconds:.0f} s")
        vm.ssh("grub-install --target=i386-pc /dev/vda && update-grub && poweroff", check=False)
        vm.wait_exit()
        seconds = vm.boot()
        print(f"vm: boot through GRUB answered SSH after {seconds:.0f} s")
        yield vm
    finally:
        vm.stop()
        disk.unlink()  # 4 GiB sparse, about 0.7 GiB used


def test_reboot_allowed_reboots_into_the_arguments(grub_vm, tmp_path):
    assert "ttm.pages_limit" not in grub_vm.ssh("cat /proc/cmdline").stdout
    inventory = tmp_path / "inventory.py"
    inventory.write_text(f"hosts = [('halo-vm', {{'ssh_hostname': '127.0.0.1', 'ssh_port': {grub_vm.port}, "
                         f"'ssh_user': 'root', 'ssh_key': '{grub_vm.key}', "
                         f"'ssh_known_hosts_file': '{tmp_path / 'known_hosts'}'}})]\n")
    # 1 GiB of RAM rounds up to 8 GiB installed: ttm_gib 4 leaves the rest to the OS.
    data = {"ttm_gib": "4", "reboot_allowed": "True", "reboot_timeout_s": str(BOOT_TIMEOUT_S)}
    started = time.monotonic()
    proc = pyinfra(str(inventory), "deploys/grub.py", data=data)
    output = proc.stdout + proc.stderr
    print(f"vm: deploys/grub.py with the reboot took {time.monotonic() - started:.0f} s")
    assert proc.returncode == 0, output + grub_vm.console()
    assert "Reboot into the new kernel arguments" in output
    grub_vm.wait_ssh()
    cmdline = grub_vm.ssh("cat /proc/cmdline").stdout.split()
    assert cmdline[-len(KERNEL_ARGS.split()):] == KERNEL_ARGS.split(), cmdline
    assert_no_changes(pyinfra(str(inventory), "deploys/grub.py", data=data))
