"""Small helpers every step uses: failing one host with an explanation, and warnings.

    from deploys.common import fail_host, warn
    if too_old:
        fail_host("Fail: kernel too old", f"kernel {release} is older than 6.16.9; {remedy}")
    warn("reboot pending on halo1: the new kernel arguments apply at the next boot")
"""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.api.exceptions import PyinfraError
from pyinfra.operations import python


class HostCheckFailed(PyinfraError):
    """A step found this host unfit; the message says what is wrong and the fix."""


def _raise(message: str) -> None:
    raise HostCheckFailed(message)


def fail_host(name: str, message: str) -> None:
    """Add an operation that fails the current host with `message` (the other hosts go on)."""
    python.call(name=name, function=_raise, message=f"{host.name}: {message}")


def warn(message: str) -> None:
    """Print a warning for the current host while the run is prepared (no operation, no change)."""
    logger.warning(f"{host.name}: {message}")
