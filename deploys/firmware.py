"""Check the GPU firmware: the linux-firmware snapshot on Fedora, the loaded MES version anywhere.

    pyinfra inventories/lab.py deploys/firmware.py

Judged by what is known bad, not by a minimum date: on Fedora, a firmware package from a snapshot in
firmware_bad_snapshots (20251125, which ships MES 0x83) fails the host, while 20251111, the rollback
AMD engineers advise after that regression, passes. Debian and Ubuntu keep an old snapshot date and
backport fixes, so the date is not judged there. Where debugfs is readable (root), the loaded MES
firmware is read: 0x83 hangs gfx1151 and fails the host; 0x80 is known good. The output says what
was and was not checked.
"""

from pyinfra import host
from pyinfra.api import deploy

from deploys.checks import firmware_rows
from deploys.report import act_on
from deploys.settings import settings
from facts.distro import Distro
from facts.firmware import FirmwarePackages, MesFirmware


@deploy("Check the GPU firmware")
def check_firmware() -> None:
    s = settings(host)
    rows = firmware_rows(
        host.get_fact(Distro)["family"],
        host.get_fact(FirmwarePackages),
        host.get_fact(MesFirmware),
        s,
    )
    act_on(rows, "Fail: the GPU firmware is unfit")


if __name__ in ("builtins", "__main__"):
    check_firmware()
