"""ROCm fact: the installed ROCm version.

Usage::

    from packaging.version import Version
    from facts.rocm import RocmVersion

    rocm = host.get_fact(RocmVersion)  # "7.1.1" or None
    if rocm and Version(rocm) >= Version("7.0"): ...

    from facts.rocm import KeyringDigests
    keys = host.get_fact(KeyringDigests, url=key_url, path="/etc/apt/keyrings/rocm.gpg")
    current = keys["url"] is not None and keys["url"] == keys["path"]
"""

from __future__ import annotations

import re
import shlex

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


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class KeyringDigests(FactBase[dict]):
    """
    sha256 of the ASCII-armoured OpenPGP key at ``url`` after ``gpg --dearmor`` (fetched with
    curl; ``None`` when it cannot be fetched or dearmored) and of the binary keyring at ``path``
    (``None`` when absent). Equal digests: the keyring holds exactly that key. The command
    prints ``url <sha256>`` and ``path <sha256>`` lines.

    .. code:: python

        {"url": "9f2c...", "path": "9f2c..."}

    Default (neither readable): ``{"url": None, "path": None}``.
    """

    @staticmethod
    def default() -> dict:
        return {"url": None, "path": None}

    def command(self, url: str, path: str) -> str:
        url, path = shlex.quote(url), shlex.quote(path)
        return (
            't=$(mktemp) && { curl --proto =https --proto-redir =https -sSLf ' + url + ' 2>/dev/null | gpg --dearmor > "$t" 2>/dev/null; '
            '[ -s "$t" ] && echo "url $(sha256sum < "$t")"; rm -f "$t"; }; '
            f'[ -f {path} ] && echo "path $(sha256sum < {path})"; '
            "true"
        )

    def process(self, output: list[str]) -> dict:
        digests = self.default()
        for line in output:
            fields = line.split()
            if len(fields) >= 2 and fields[0] in digests and _SHA256.match(fields[1]):
                digests[fields[0]] = fields[1]
        return digests
