"""Check the running kernel: fail below kernel_min_version, warn below kernel_recommended_version.

    pyinfra inventories/lab.py deploys/kernel.py

Kernels older than 6.16.9 let ROCm see only about 15.5 GiB of GTT; 6.18.4 brings the gfx1151
stability fixes ROCm 7.2 needs. A failing host gets its running release and the distro's way to a
newer kernel; nothing is changed on the hosts.
"""

from pyinfra import host
from pyinfra.api import deploy

from deploys.checks import kernel_row
from deploys.report import act_on
from deploys.settings import settings
from facts.distro import Distro
from facts.kernel import KernelRelease


@deploy("Check the kernel")
def check_kernel() -> None:
    s = settings(host)
    row = kernel_row(host.get_fact(Distro)["family"], host.get_fact(KernelRelease), s)
    act_on([row], "Fail: the kernel is too old")


if __name__ in ("builtins", "__main__"):
    check_kernel()
