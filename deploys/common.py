"""Small helpers every step uses: failing one host with an explanation, and warnings.

    from deploys.common import fail_host, warn
    if too_old:
        fail_host("Fail: kernel too old", f"kernel {release} is older than 6.16.9; {remedy}")
    warn("reboot pending on halo1: the new kernel arguments apply at the next boot")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import gevent.lock
from pyinfra import host, logger
from pyinfra.api.exceptions import PyinfraError
from pyinfra.operations import apt, dnf, python


T = TypeVar("T")


class HostCheckFailed(PyinfraError):
    """A step found this host unfit; the message says what is wrong and the fix."""


def _raise(message: str) -> None:
    raise HostCheckFailed(message)


def fail_host(name: str, message: str) -> None:
    """Add an operation that fails the current host with `message` (the other hosts go on)."""
    python.call(name=name, function=_raise, message=f"{host.name}: {message}")


def install_packages(distro: dict, name: str, packages: list[str], update: bool = True,
                     cache_time: int = 24 * 3600) -> None:
    """Install `packages` with the host's package manager (facts.distro.Distro): apt (lists refreshed
    when `update` and older than `cache_time` s) or dnf; a host with neither fails, naming them."""
    if packages and distro["package_manager"] == "dnf":
        dnf.packages(name=name, packages=packages)
    elif packages and distro["package_manager"] == "apt":
        apt.packages(name=name, packages=packages, update=update, cache_time=cache_time)
    elif distro["package_manager"] not in ("apt", "dnf"):
        fail_host(f"Fail: {name}", f"{distro['name'] or distro['id'] or 'this distribution'} is neither "
                  "Debian/Ubuntu-like (apt) nor Fedora/RHEL-like (dnf), the distributions halo-provision "
                  f"installs packages on (needed here: {' '.join(packages)})")


def warn(message: str) -> None:
    """Print a warning for the current host while the run is prepared (no operation, no change)."""
    logger.warning(f"{host.name}: {message}")


def run_lock(key: str) -> gevent.lock.RLock:
    """A lock shared by all hosts of this pyinfra run: they are prepared in parallel greenlets, so work
    meant to happen once per run (reading other hosts' facts) must hold it.

        with run_lock("llama_cpp_plan"):
            ...
    """
    locks = host.state.__dict__.setdefault("_halo_run_locks", {})  # no I/O here: no greenlet switch
    return locks.setdefault(key, gevent.lock.RLock())


def once_per_run(key: str, compute: Callable[[], T]) -> T:
    """compute() once per pyinfra run; hosts prepared meanwhile wait for its result.

        plans = once_per_run("llama_cpp_plans", lambda: plan_builds(host.state))
    """
    with run_lock(key):
        results = host.state.__dict__.setdefault("_halo_run_results", {})
        if key not in results:
            results[key] = compute()
        return results[key]
