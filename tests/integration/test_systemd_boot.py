"""deploys/grub.py on a lab host that boots with systemd-boot: /etc/kernel/cmdline and kernel-install.

halo2 (Debian 13) becomes a systemd-boot host the way an admin makes one: Debian's systemd-boot
package, `bootctl install` onto an ESP at /boot/efi, `/etc/kernel/install.conf` naming that ESP
and the Boot Loader Specification layout, `/etc/kernel/cmdline`, and `kernel-install add` for the
Debian kernel in /boot, which writes the entry under /boot/efi/loader/entries. What is not real:
the ESP is a bind mount of a directory (no FAT partition in a container), so `bootctl install`
runs with SYSTEMD_RELAX_ESP_CHECKS=1, and the firmware never boots it. Everything the step runs
(kernel-install and its plugins, the entry files it checks) is Debian's own. GRUB stays installed
on the host, as on a machine moved to systemd-boot: the step must leave /etc/default/grub alone.
"""

from __future__ import annotations

import shlex

import pytest

from lab.pyinfra_cli import pyinfra, results
from tests.integration.conftest import assert_no_changes
from lab import lab

PAGES_120 = str(120 * 262144)
PAGES_100 = str(100 * 262144)
OURS = f"ttm.pages_limit={PAGES_120} ttm.page_pool_size={PAGES_120} amd_iommu=off"
OPERATION = "Set the GPU kernel arguments | Set the kernel arguments in /etc/kernel/cmdline and the systemd-boot entries"
ENTRY_OPTIONS = "cat /boot/efi/loader/entries/*.conf | awk '$1 == \"options\"' | cut -d' ' -f2- | sed 's/^ *//'"
SETUP = """set -e
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q systemd-boot >/dev/null
mkdir -p /boot/efi && mount --bind /boot/efi /boot/efi
SYSTEMD_RELAX_ESP_CHECKS=1 bootctl install --esp-path=/boot/efi --no-variables >/dev/null 2>&1
printf 'BOOT_ROOT=/boot/efi\\nlayout=bls\\n' > /etc/kernel/install.conf
echo 'root=/dev/vda1 ro quiet iommu=pt' > /etc/kernel/cmdline
k=$(ls /lib/modules); kernel-install add "$k" "/boot/vmlinuz-$k" "/boot/initrd.img-$k"
"""
TEARDOWN = ("umount /boot/efi; rm -rf /boot/efi /etc/kernel/cmdline /etc/kernel/cmdline.halo-provision-* "
            "/etc/kernel/install.conf /etc/kernel/install.d/10-halo-test-fail.install")


def ssh(command: str) -> str:
    return lab.ssh("halo2", command, timeout=300).stdout


@pytest.fixture
def systemd_boot_host(lab_hosts):
    try:
        ssh(SETUP)
        assert ssh(ENTRY_OPTIONS).split()[:4] == ["root=/dev/vda1", "ro", "quiet", "iommu=pt"]
        yield str(lab.STATE / "inventory.py")
    finally:
        lab.ssh("halo2", TEARDOWN, check=False)


def test_systemd_boot_gets_the_arguments_in_etc_kernel_cmdline_and_every_entry(systemd_boot_host):
    grub_before = ssh("sha256sum /etc/default/grub; ls -l /boot/grub 2>&1")
    proc = pyinfra(systemd_boot_host, "deploys/grub.py", "--limit", "halo2")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert results(proc)[OPERATION]["success"] == 1, output
    assert f"reboot pending on halo2: the running kernel lacks {OURS}" in output

    assert ssh("cat /etc/kernel/cmdline") == f"root=/dev/vda1 ro quiet {OURS}\n"
    backups = ssh("ls /etc/kernel/cmdline.halo-provision-*.bak").split()
    assert len(backups) == 1 and ssh(f"cat {shlex.quote(backups[0])}") == "root=/dev/vda1 ro quiet iommu=pt\n"
    options = ssh(ENTRY_OPTIONS).split()  # kernel-install adds systemd.machine_id=
    assert options[:6] == ["root=/dev/vda1", "ro", "quiet", *OURS.split()], options
    assert ssh("sha256sum /etc/default/grub; ls -l /boot/grub 2>&1") == grub_before  # GRUB left alone

    assert_no_changes(pyinfra(systemd_boot_host, "deploys/grub.py", "--limit", "halo2"))


def test_a_failing_kernel_install_fails_the_host_and_puts_the_file_and_entries_back(systemd_boot_host):
    assert pyinfra(systemd_boot_host, "deploys/grub.py", "--limit", "halo2").returncode == 0
    good = ssh("cat /etc/kernel/cmdline")
    entries = ssh(ENTRY_OPTIONS)
    # A kernel-install plugin that fails, as a broken initramfs or signing hook would.
    ssh("mkdir -p /etc/kernel/install.d && printf '#!/bin/sh\\necho plugin failed >&2\\nexit 1\\n' "
        "> /etc/kernel/install.d/10-halo-test-fail.install && chmod +x /etc/kernel/install.d/10-halo-test-fail.install")

    proc = pyinfra(systemd_boot_host, "deploys/grub.py", "--limit", "halo2", data={"ttm_gib": "100"})
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output  # the only host failed: pyinfra prints no results table then
    assert f"Starting operation: {OPERATION}" in output and "plugin failed" in output, output
    assert "kernel-install failed or the boot entries lack the arguments; restored /etc/kernel/cmdline" in output
    assert ssh("cat /etc/kernel/cmdline") == good
    assert ssh(ENTRY_OPTIONS) == entries and PAGES_100 not in entries
