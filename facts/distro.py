"""The host's distribution, in one place: id, family, release, package manager and boot loader.

Every step reads it once and passes it on::

    from facts.distro import Distro
    d = host.get_fact(Distro)
    d["family"]           # "fedora" | "ubuntu" | "debian" | another ID (unsupported)
    d["package_manager"]  # "dnf" | "apt" | None
    d["boot_loader"]      # "grub" | "grubby" | "systemd-boot" | "kernelstub" | None

The family follows ID, then ID_LIKE in its order: Pop!_OS (``ID_LIKE="ubuntu debian"``) is
``ubuntu``, Rocky or AlmaLinux (``ID_LIKE="rhel centos fedora"``) are ``fedora`` and get dnf.
The boot loader is judged from the files and tools the host has (see ``boot_loader()``).
"""

from __future__ import annotations

import shlex
from typing import TypedDict

from pyinfra.api import FactBase

# IDs (from ID or ID_LIKE) -> family; the first ID in ID, ID_LIKE order that is known decides.
FAMILIES = {
    "fedora": "fedora", "rhel": "fedora", "centos": "fedora",
    "ubuntu": "ubuntu",
    "debian": "debian",
}
PACKAGE_MANAGERS = {"fedora": "dnf", "ubuntu": "apt", "debian": "apt"}
# Debian testing has no VERSION_ID: its release number from the codename.
DEBIAN_CODENAMES = {"bookworm": 12, "trixie": 13, "forky": 14, "duke": 15}

KERNELSTUB_CONFIG = "/etc/kernelstub/configuration"
KERNEL_CMDLINE = "/etc/kernel/cmdline"
# A systemd-boot installation: its loader.conf or its EFI binary on an ESP or XBOOTLDR mount.
SYSTEMD_BOOT_MARKERS = tuple(
    f"{esp}/{path}" for esp in ("/boot/efi", "/efi", "/boot")
    for path in ("loader/loader.conf", "EFI/systemd/systemd-bootx64.efi")
)
PROBED_FILES = (KERNELSTUB_CONFIG, KERNEL_CMDLINE, "/etc/default/grub", *SYSTEMD_BOOT_MARKERS)
PROBED_TOOLS = ("grubby", "kernelstub", "update-grub", "grub-mkconfig", "kernel-install", "bootctl")


class DistroInfo(TypedDict):
    id: str  # os-release ID, lower case ("" when unknown)
    like: list[str]  # ID_LIKE
    family: str  # fedora | ubuntu | debian | the ID itself when no known family
    name: str  # PRETTY_NAME
    release: str | None  # VERSION_ID ("24.04", "43"), or the Debian testing number from the codename
    major: int | None
    codename: str | None  # VERSION_CODENAME
    package_manager: str | None  # dnf | apt | None
    boot_loader: str | None  # grub | grubby | systemd-boot | kernelstub | None
    files: list[str]  # the probed boot files that exist
    tools: list[str]  # the probed boot tools on PATH


def os_release(lines: list[str]) -> dict[str, str]:
    """KEY=value lines of os-release (shell quoting) -> {KEY: value}; unreadable lines are skipped.

    >>> os_release(['ID=pop', 'ID_LIKE="ubuntu debian"', '# comment', 'BROKEN="open'])
    {'ID': 'pop', 'ID_LIKE': 'ubuntu debian'}
    """
    values = {}
    for line in lines:
        key, equals, value = line.strip().partition("=")
        if not equals or not key.isidentifier():
            continue
        try:
            words = shlex.split(value)
        except ValueError:
            continue
        values[key] = " ".join(words)
    return values


def family_of(distro_id: str, like: list[str]) -> str:
    """The family of ID and ID_LIKE; the ID itself when neither is known.

    >>> family_of("pop", ["ubuntu", "debian"]), family_of("rocky", ["rhel", "centos", "fedora"])
    ('ubuntu', 'fedora')
    >>> family_of("arch", [])
    'arch'
    """
    for name in [distro_id, *like]:
        if name in FAMILIES:
            return FAMILIES[name]
    return distro_id


def release_of(family: str, version_id: str | None, codename: str | None) -> tuple[str | None, int | None]:
    """(release, major): VERSION_ID, or for Debian testing (no VERSION_ID) the number of its codename.

    >>> release_of("debian", None, "forky"), release_of("ubuntu", "24.04", "noble")
    (('14', 14), ('24.04', 24))
    """
    if not version_id and family == "debian" and codename in DEBIAN_CODENAMES:
        version_id = str(DEBIAN_CODENAMES[codename])
    if not version_id:
        return None, None
    head = version_id.split(".")[0]
    return version_id, int(head) if head.isdigit() else None


def boot_loader(family: str, files: set[str], tools: set[str]) -> str | None:
    """Which boot loader takes the kernel arguments, from the files and tools the host has.

    - ``kernelstub`` (Pop!_OS): /etc/kernelstub/configuration exists;
    - ``systemd-boot``: its loader.conf or EFI binary is on /boot/efi, /efi or /boot; or there is no
      GRUB at all and /etc/kernel/cmdline exists (kernel-install writes the entries from it);
    - ``grubby`` (Fedora family: GRUB with BLS entries): grubby or /etc/default/grub is there;
    - ``grub`` (Debian, Ubuntu): /etc/default/grub, update-grub or grub-mkconfig is there;
    - None: none of these.

    Fedora also writes /etc/kernel/cmdline with GRUB, so that file alone never wins over GRUB.

    >>> boot_loader("ubuntu", {"/etc/kernelstub/configuration", "/boot/efi/loader/loader.conf"}, {"kernelstub"})
    'kernelstub'
    >>> boot_loader("fedora", {"/etc/kernel/cmdline"}, {"grubby", "kernel-install"})
    'grubby'
    >>> boot_loader("debian", {"/etc/kernel/cmdline"}, {"kernel-install"})
    'systemd-boot'
    """
    if KERNELSTUB_CONFIG in files:
        return "kernelstub"
    if files & set(SYSTEMD_BOOT_MARKERS):
        return "systemd-boot"
    if family == "fedora" and ("grubby" in tools or "/etc/default/grub" in files):
        return "grubby"  # without grubby installed the grub step says to install it
    if "/etc/default/grub" in files or tools & {"update-grub", "grub-mkconfig"}:
        return "grub"
    if KERNEL_CMDLINE in files:
        return "systemd-boot"
    return None


class Distro(FactBase[DistroInfo]):
    """
    The host's distribution from ``/etc/os-release`` (else ``/usr/lib/os-release``), and which
    boot loader takes kernel arguments, from the files and tools listed in ``PROBED_FILES`` and
    ``PROBED_TOOLS``.

    .. code:: python

        {"id": "pop", "like": ["ubuntu", "debian"], "family": "ubuntu", "name": "Pop!_OS 24.04 LTS",
         "release": "24.04", "major": 24, "codename": "noble", "package_manager": "apt",
         "boot_loader": "kernelstub", "files": ["/etc/kernelstub/configuration", "/etc/kernel/cmdline"],
         "tools": ["kernelstub", "kernel-install", "bootctl"]}

    Default (no output): id "" and every other field empty or None.
    """

    def command(self) -> str:
        files = " ".join(PROBED_FILES)
        tools = " ".join(PROBED_TOOLS)
        return (
            "{ cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null; } | sed 's/^/os /'; "
            f'for f in {files}; do [ -e "$f" ] && echo "file $f"; done; '
            f'for t in {tools}; do command -v "$t" >/dev/null 2>&1 && echo "tool $t"; done; true'
        )

    @staticmethod
    def default() -> DistroInfo:
        return DistroInfo(id="", like=[], family="", name="", release=None, major=None, codename=None,
                          package_manager=None, boot_loader=None, files=[], tools=[])

    def process(self, output: list[str]) -> DistroInfo:
        os_lines, files, tools = [], [], []
        for line in output:
            kind, _, rest = line.partition(" ")
            if kind == "os":
                os_lines.append(rest)
            elif kind == "file" and rest.strip() in PROBED_FILES:
                files.append(rest.strip())
            elif kind == "tool" and rest.strip() in PROBED_TOOLS:
                tools.append(rest.strip())
        meta = os_release(os_lines)
        distro_id = meta.get("ID", "").lower()
        like = meta.get("ID_LIKE", "").lower().split()
        family = family_of(distro_id, like)
        codename = meta.get("VERSION_CODENAME") or None
        release, major = release_of(family, meta.get("VERSION_ID"), codename)
        return DistroInfo(
            id=distro_id, like=like, family=family, name=meta.get("PRETTY_NAME") or meta.get("NAME", ""),
            release=release, major=major, codename=codename, package_manager=PACKAGE_MANAGERS.get(family),
            boot_loader=boot_loader(family, set(files), set(tools)) if distro_id else None,
            files=files, tools=tools,
        )
