"""ROCm fact: the installed ROCm version.

Usage::

    from packaging.version import Version
    from facts.rocm import RocmVersion

    rocm = host.get_fact(RocmVersion)  # "7.1.1" or None
    if rocm and Version(rocm) >= Version("7.0"): ...
"""

from __future__ import annotations

import re

from packaging.version import Version
from pyinfra.api import FactBase

from facts.firmware import installed_packages, package_query

# Packages in order of preference: AMD's (and Fedora's) rocm-core, then Debian's own packaging.
_PACKAGES = ["rocm-core", "libamdhip64-6", "libamdhip64-5", "hipcc"]


def rocm_version(text: str | None) -> str | None:
    """
    Up to three numeric components of a ROCm version, dropping epoch and build/
    package suffixes: "7.1.1-38" -> "7.1.1", "7.1.1.70101-38~24.04" -> "7.1.1",
    "6.4.2-1.fc43" -> "6.4.2"; None when it does not start with a number.
    """
    match = re.match(r"(?:[0-9]+:)?([0-9]+(?:\.[0-9]+){0,2})", (text or "").strip())
    return match.group(1) if match else None


class RocmVersion(FactBase[str | None]):
    """
    The installed ROCm version, from the first source found:
    ``/opt/rocm/.info/version``, the newest ``/opt/rocm-*/.info/version``, the
    ``rocm-core`` package (dpkg or rpm), Debian's ``libamdhip64-6`` /
    ``libamdhip64-5`` / ``hipcc`` packages. Each output line is tagged with its
    source: ``opt_rocm <version>``, ``opt_rocm_dir <version>``, ``dpkg ...``, ``rpm ...``.

    .. code:: python

        "7.1.1"

    Default (not installed, or no parseable version): None.
    """

    def command(self) -> str:
        return (
            'v=$(cat /opt/rocm/.info/version 2>/dev/null) && echo "opt_rocm $v"; '
            "for f in /opt/rocm-*/.info/version; do "
            'v=$(cat "$f" 2>/dev/null) && echo "opt_rocm_dir $v"; '
            "done; "
            + package_query(_PACKAGES, ["rocm-core"])
            + "true"
        )

    def process(self, output: list[str]) -> str | None:
        opt_rocm, opt_dirs = None, []
        for line in output:
            tag, _, value = line.strip().partition(" ")
            if tag == "opt_rocm":
                opt_rocm = rocm_version(value)
            elif tag == "opt_rocm_dir":
                opt_dirs.append(rocm_version(value))
        newest_dir = max(filter(None, opt_dirs), key=Version, default=None)
        candidates = [opt_rocm, newest_dir]
        packages = installed_packages(output)
        candidates += [rocm_version(packages.get(name)) for name in _PACKAGES]
        return next(filter(None, candidates), None)
