"""The whole sequence for a cluster, in order; each step is also runnable on its own.

    pyinfra inventories/lab.py deploys/full.py

A host that fails a step (too old a kernel, bad firmware, a missing user) stops there; the
other hosts go on. Each step is one call below, on its own line: pyinfra orders operations by the
line that adds them, so the order of these lines is the order of the run.

The closing verify reads its facts when the run reaches it, after every change above, and prints
one table per host and the summary at the end of the run; a host that does not pass fails there.
"""

from pyinfra import host

import deploys.firewall
import deploys.groups
import deploys.grub
import deploys.head
import deploys.llama_cpp
import deploys.rpc_worker
from deploys.firewall import firewall
from deploys.firmware import check_firmware
from deploys.groups import gpu_groups
from deploys.grub import grub_kernel_args
from deploys.head import head
from deploys.kernel import check_kernel
from deploys.llama_cpp import llama_cpp
from deploys.rocm import install_rocm
from deploys.rpc_worker import rpc_worker
from deploys.runcache import prefetch
from deploys.settings import settings
from deploys.verify import host_reads, verify_host

READERS = (deploys.groups, deploys.grub, deploys.llama_cpp, deploys.firewall, deploys.rpc_worker, deploys.head)

if __name__ in ("builtins", "__main__"):
    s = settings(host)  # every host's data is valid before any step adds an operation
    prefetch(host_reads(s) + [read for step in READERS for read in step.reads(s)])  # what holds still: one command
    check_kernel()
    check_firmware()
    gpu_groups()
    grub_kernel_args()
    install_rocm()
    llama_cpp()
    firewall()
    rpc_worker()
    head()
    verify_host()
