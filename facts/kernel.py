"""Kernel facts: running release and boot command line.

Usage::

    from packaging.version import Version
    from facts.kernel import KernelCmdline, KernelRelease, cmdline_value, kernel_version

    release = host.get_fact(KernelRelease)
    if release and kernel_version(release["release"]) >= Version("6.16.9"): ...
    pages = cmdline_value(host.get_fact(KernelCmdline), "ttm.pages_limit")
"""

from __future__ import annotations

import re
from typing import TypedDict

from packaging.version import InvalidVersion, Version
from pyinfra.api import FactBase

# "6.17.0-14-generic", "6.12", "7.0.0-rc3",
# Fedora rc "6.19.0-0.rc2.fc44", Ubuntu mainline rc "6.17.0-061700rc3-generic"
_RELEASE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?(?:-(?:0\.|\d+)?rc(\d+))?")


def kernel_version(release: str) -> Version | None:
    """Comparable version of a ``uname -r`` string ("7.0.0-rc3" -> 7.0.0rc3), or None."""
    match = _RELEASE.match((release or "").strip())
    if not match:
        return None
    major, minor, patch, rc = match.groups()
    text = f"{major}.{minor}" + (f".{patch}" if patch else "") + (f"rc{rc}" if rc else "")
    try:
        return Version(text)
    except InvalidVersion:
        return None


# Ubuntu's kernel releases: <upstream version>-<ABI number>-<flavour>, e.g. "6.14.0-1018-oem".
_UBUNTU_RELEASE = re.compile(r"^([0-9]+\.[0-9]+\.[0-9]+)-([0-9]+)-([a-z][a-z0-9-]*)$")


def ubuntu_kernel(release: str) -> tuple[Version, int, str] | None:
    """(upstream version, ABI number, flavour) of an Ubuntu-style kernel release, or None.

    >>> ubuntu_kernel("6.14.0-1018-oem")
    (<Version('6.14.0')>, 1018, 'oem')
    >>> ubuntu_kernel("6.18.4-200.fc43.x86_64") is None
    True
    """
    match = _UBUNTU_RELEASE.match((release or "").strip())
    if not match:
        return None
    return Version(match.group(1)), int(match.group(2)), match.group(3)


class KernelReleaseInfo(TypedDict):
    release: str
    version: str | None


class KernelRelease(FactBase[KernelReleaseInfo | None]):
    """
    The running kernel (``uname -r``) and its normalized version, which
    ``packaging.version.Version`` can compare (``kernel_version()`` returns that object).

    .. code:: python

        {"release": "6.17.0-14-generic", "version": "6.17.0"}

    ``version`` is None when the release is unparseable. Default: None.
    """

    def command(self) -> str:
        return "uname -r; true"

    def process(self, output: list[str]) -> KernelReleaseInfo | None:
        release = next((line.strip() for line in output if line.strip()), None)
        if release is None:
            return None
        version = kernel_version(release)
        return KernelReleaseInfo(release=release, version=str(version) if version else None)


def unquote(text: str) -> str:
    """Drop one leading and one trailing double quote, as the kernel does (grubby prints values so too).

    >>> unquote('"quiet splash"'), unquote('"cut off'), unquote('plain')
    ('quiet splash', 'cut off', 'plain')
    """
    if text.startswith('"'):
        text = text[1:]
    if text.endswith('"'):
        text = text[:-1]
    return text


def parse_cmdline(text: str) -> list[list[str | None]]:
    """
    Split a kernel command line like the kernel's ``next_arg()``: whitespace
    separates arguments except inside double quotes, an argument is split at its
    first ``=``, and quotes around key and value are dropped. Flags get value None.
    An unterminated quote runs to the end of the line.

    >>> parse_cmdline('quiet dyndbg="file drm* +p" a=1')
    [['quiet', None], ['dyndbg', 'file drm* +p'], ['a', '1']]
    """
    args: list[list[str | None]] = []
    for token in re.findall(r'(?:[^\s"]|"[^"]*(?:"|$))+', text):
        key, equals, value = token.partition("=")
        args.append([unquote(key), unquote(value) if equals else None])
    return args


def cmdline_value(args: list[list[str | None]] | None, key: str) -> str | None:
    """
    The value of the LAST ``key`` in parsed cmdline ``args`` (the kernel uses the
    last one); None when absent or a flag. ``-`` and ``_`` in keys match each
    other, like the kernel's parameter matching.
    """
    wanted = key.replace("-", "_")
    value = None
    for arg_key, arg_value in args or []:
        if (arg_key or "").replace("-", "_") == wanted:
            value = arg_value
    return value


class KernelCmdline(FactBase[list[list[str | None]]]):
    """
    Arguments of the running kernel (``/proc/cmdline``) in order, as
    ``[key, value]`` pairs; value None for flags; repeated keys are kept.

    .. code:: python

        [["root", "UUID=ab"], ["quiet", None], ["ttm.pages_limit", "31457280"]]

    Use ``cmdline_value(args, key)`` to look one up. Default: ``[]``.
    """

    def command(self) -> str:
        return "cat /proc/cmdline 2>/dev/null; true"

    @staticmethod
    def default() -> list[list[str | None]]:
        return []

    def process(self, output: list[str]) -> list[list[str | None]]:
        return parse_cmdline(" ".join(output))
