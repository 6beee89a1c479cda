"""Faults during a run, on the lab hosts: a host that dies in the middle of the run, a reboot that
does not come back.

deploys/groups.py + deploys/grub.py are the cheapest steps that change a host: a new ttm_gib makes
every host edit /etc/default/grub and regenerate grub.cfg. A GRUB script that sleeps holds halo3
inside update-grub, and there its power is cut (its container's init and nspawn get SIGKILL).
A lab host that reboots stays down (nspawn exits when its container reboots): a reboot that never
comes back.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from lab.pyinfra_cli import REPO, pyinfra, results
from tests.integration.conftest import LAB_HOSTS, assert_no_changes
from lab import lab

VICTIM = "halo3"
STEPS = ("deploys/groups.py", "deploys/grub.py")
DATA = {"ttm_gib": "100"}
PAGES = 100 * 262144
GRUB_OP = "Set the GPU kernel arguments | Set the kernel arguments in GRUB_CMDLINE_LINUX_DEFAULT and regenerate grub.cfg"
SLOW_HOOK = "/etc/grub.d/01_halo_test_slow"  # grub-mkconfig runs it first; it outputs nothing


@pytest.fixture(scope="module")
def hosts(lab_session):
    """The lab hosts, each with Debian's own /etc/default/grub (GRUB work to do for every test);
    booted afresh after this module (its tests leave GRUB backups, other arguments, a host down)."""
    hosts = lab.ensure(lab.parse_host_args(LAB_HOSTS))
    yield hosts
    lab.start(lab.parse_host_args(LAB_HOSTS))


@pytest.fixture
def inventory(hosts) -> str:
    for host in hosts:
        lab.ssh(host, "cp /usr/share/grub/default/grub /etc/default/grub")
    return str(lab.STATE / "inventory.py")


def run_and_kill(inventory: str, victim: str, timeout: float = 600) -> tuple[int, str]:
    """Run the steps in the background; cut the victim's power once it sleeps in SLOW_HOOK."""
    cmd = [sys.executable, "-m", "pyinfra", "-y", inventory, *STEPS]
    for key, value in DATA.items():
        cmd += ["--data", f"{key}={value}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while lab.ssh(victim, f"pgrep -f {SLOW_HOOK}", check=False).returncode != 0:
        assert proc.poll() is None and time.monotonic() < deadline, "the victim never reached the GRUB script"
        time.sleep(0.5)
    lab.kill_host(victim)
    output, _ = proc.communicate(timeout=timeout)
    return proc.returncode, output


def grub_args(name: str) -> tuple[str, str]:
    """(GRUB_CMDLINE_LINUX_DEFAULT as /etc/default/grub sets it, the first linux line of grub.cfg)."""
    default = lab.ssh(name, '. /etc/default/grub; printf "%s" "$GRUB_CMDLINE_LINUX_DEFAULT"').stdout
    cfg = lab.ssh(name, "awk '$1 == \"linux\" { print; exit }' /boot/grub/grub.cfg").stdout
    return default, cfg


def test_a_host_that_dies_mid_run_leaves_the_others_done_and_a_rerun_converges(inventory):
    lab.ssh(VICTIM, f"printf '#!/bin/sh\\nsleep 600\\n' > {SLOW_HOOK} && chmod 755 {SLOW_HOOK}")
    started = time.monotonic()
    code, output = run_and_kill(inventory, VICTIM)
    took = time.monotonic() - started

    assert code != 0, output
    assert results(subprocess.CompletedProcess([], code, output, ""))[GRUB_OP] == {
        "success": 2, "error": 1, "no_change": 0}, output
    assert f"[{VICTIM}] Error" in output, output
    assert took < 120, f"the run waited {took:.0f} s for a dead host"
    for name in ("halo1", "halo2"):
        default, cfg = grub_args(name)
        assert f"ttm.pages_limit={PAGES}" in default and f"ttm.pages_limit={PAGES}" in cfg, (name, default, cfg)

    lab.restart_host(VICTIM)  # same disk: whatever halo3 had written before the power cut is still there
    lab.ssh(VICTIM, f"rm {SLOW_HOOK}")
    again = pyinfra(inventory, *STEPS, data=DATA)
    assert again.returncode == 0, again.stdout + again.stderr
    default, cfg = grub_args(VICTIM)
    assert f"ttm.pages_limit={PAGES}" in default and f"ttm.pages_limit={PAGES}" in cfg, (default, cfg)
    assert_no_changes(pyinfra(inventory, *STEPS, data=DATA))


def test_a_reboot_that_does_not_come_back_fails_that_host_only(inventory, tmp_path):
    address = lab.running_host(VICTIM).address
    text = open(inventory).read().replace(f"'rpc_bind_address': '{address}'",
                                         f"'rpc_bind_address': '{address}', 'reboot_allowed': True, 'reboot_timeout_s': 60")
    reboot_victim = tmp_path / "inventory.py"
    reboot_victim.write_text(text)
    started = time.monotonic()
    proc = pyinfra(str(reboot_victim), "deploys/grub.py", data=DATA)
    took = time.monotonic() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "Server did not reboot in time (reboot_timeout=60s)" in output, output
    found = results(proc)
    assert found[GRUB_OP] == {"success": 3, "error": 0, "no_change": 0}, output
    assert found["Set the GPU kernel arguments | Reboot into the new kernel arguments"]["error"] == 1, output
    for name in ("halo1", "halo2"):
        assert f"reboot pending on {name}" in output
    assert not lab.is_alive(lab.running_host(VICTIM))
    assert took < 60 + 60, f"the run took {took:.0f} s"
    lab.restart_host(VICTIM)
