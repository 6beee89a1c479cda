"""Small helpers every step uses: failing one host with an explanation, installing packages with the
host's package manager (apt or dnf, from facts.distro.Distro), and warnings.

    from deploys.common import fail_host, failure, warn
    if too_old:  # known while the run is prepared: an operation that fails the host
        fail_host("Fail: kernel too old", f"kernel {release} is older than 6.16.9; {remedy}")
    warn("reboot pending on halo1: the new kernel arguments apply at the next boot")

    @operation()
    def start(...):  # found when the operation runs: a command that fails the host
        if not ready:
            yield failure("the build has no llama-server: run deploys/llama_cpp.py")

Both print `<host>: <message>` in red and fail that host only; the other hosts go on.
"""

from __future__ import annotations

from collections.abc import Callable

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, operation
from pyinfra.operations import apt, dnf


def _fail(state, host, message: str) -> bool:
    # pyinfra fails the host when a FunctionCommand returns False; it prints no traceback then.
    host.log_styled(message, fg="red", log_func=logger.error)
    return False


def failure(message: str) -> FunctionCommand:
    """A command that fails the current host with `<host>: message` when it runs (yield it in an
    @operation that finds the host unfit at execute time)."""
    return FunctionCommand(_fail, (f"{host.name}: {message}",), {})


def failure_unless(test: Callable[[], bool], message: str) -> FunctionCommand:
    """A command that, when it runs, fails the current host with `<host>: message` unless test() is true
    (for what an earlier operation of the run makes, e.g. a file on the pyinfra machine)."""
    def check(state, host) -> bool:
        return True if test() else _fail(state, host, f"{host.name}: {message}")

    return FunctionCommand(check, (), {})


@operation(is_idempotent=False)
def _failed(message: str):
    yield failure(message)


def fail_host(name: str, message: str) -> None:
    """Add an operation named `name` that fails the current host with `message` (the other hosts go on)."""
    _failed(name=name, message=message)


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


def env_file_line(name: str, value: str) -> str:
    """One line of a systemd EnvironmentFile= that sets `name` to exactly `value`.

    The value goes in double quotes, where systemd takes a backslash before one of `"`, `\\`, `` ` ``
    or `$` as that character and keeps every other character as it is (no expansion, no comments);
    names and values are validated first (deploys/settings/fields.py: no newlines or NULs). Read back through
    `systemd-run -p EnvironmentFile=... env` on systemd 252 (Debian 12) and 257 (Debian 13): quotes,
    `$`, backslashes, `#`, tabs, leading and trailing spaces and empty values arrive unchanged.

    >>> print(env_file_line("GGML_VK_VISIBLE_DEVICES", "0"))
    GGML_VK_VISIBLE_DEVICES="0"
    >>> print(env_file_line("X", 'a "b" $HOME \\\\ # c'))
    X="a \\"b\\" \\$HOME \\\\ # c"
    """
    escaped = "".join("\\" + c if c in '"\\`$' else c for c in value)
    return f'{name}="{escaped}"'
