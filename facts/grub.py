"""Boot loader facts: the kernel arguments GRUB is configured with.

Usage::

    from facts.grub import GrubDefault, GrubbyKernels
    for kernel in host.get_fact(GrubbyKernels):            # Fedora: every boot entry
        print(kernel["kernel"], kernel["args"])
    config = host.get_fact(GrubDefault)                    # Debian/Ubuntu: /etc/default/grub
    config["path"], config["text"], config["cfg_args"]
"""

from __future__ import annotations

import base64
import binascii
from typing import TypedDict

from pyinfra.api import FactBase

from facts import sections
from facts.kernel import parse_cmdline, unquote

GRUB_DEFAULT = "/etc/default/grub"
GRUB_CFG = "/boot/grub/grub.cfg"


class GrubbyKernel(TypedDict):
    index: int
    kernel: str
    args: list[list[str | None]]


class GrubbyKernels(FactBase[list[GrubbyKernel]]):
    """
    The boot entries ``grubby --info=ALL`` lists (Fedora), in index order, with their kernel
    arguments parsed like ``facts.kernel.KernelCmdline``.

    .. code:: python

        [{"index": 0, "kernel": "/boot/vmlinuz-6.17.7-300.fc43.x86_64",
          "args": [["ro", None], ["rhgb", None], ["ttm.pages_limit", "31457280"]]}]

    Default (no grubby, or it lists nothing): ``[]``.
    """

    def command(self) -> str:
        return "command -v grubby >/dev/null 2>&1 && grubby --info=ALL 2>/dev/null; true"

    @staticmethod
    def default() -> list[GrubbyKernel]:
        return []

    def process(self, output: list[str]) -> list[GrubbyKernel]:
        entries: list[dict[str, str]] = []
        for line in output:
            key, equals, value = line.strip().partition("=")
            if not equals:
                continue
            if key == "index":
                entries.append({})
            if entries:
                entries[-1][key] = unquote(value.strip())  # grubby's quotes (one alone if cut)
        kernels: list[GrubbyKernel] = []
        for entry in entries:
            index = entry.get("index", "")
            if not index.isdigit() or "kernel" not in entry:
                continue
            kernels.append(
                GrubbyKernel(index=int(index), kernel=entry["kernel"], args=parse_cmdline(entry.get("args", "")))
            )
        return kernels


class GrubDefaultInfo(TypedDict):
    path: str
    text: str | None
    cfg_args: list[list[str | None]] | None


class GrubDefault(FactBase[GrubDefaultInfo]):
    """
    Where GRUB_CMDLINE_LINUX_DEFAULT is set on Debian/Ubuntu and what the generated grub.cfg boots:

    - ``path``: the file whose assignment takes effect: the last drop-in in
      ``/etc/default/grub.d/*.cfg`` that assigns it (grub-mkconfig reads them after
      /etc/default/grub; Ubuntu cloud images have ``50-cloudimg-settings.cfg``), else /etc/default/grub;
    - ``text``: that file's exact content, None when it is missing;
    - ``cfg_args``: the arguments of the first ``linux`` line of /boot/grub/grub.cfg (the default
      entry), None without grub.cfg or without a linux line.

    .. code:: python

        {"path": "/etc/default/grub", "text": "GRUB_DEFAULT=0\\n...",
         "cfg_args": [["root", "UUID=ab"], ["ro", None], ["quiet", None]]}

    Default (no output): path /etc/default/grub, text and cfg_args None.
    """

    @staticmethod
    def default() -> GrubDefaultInfo:
        return GrubDefaultInfo(path=GRUB_DEFAULT, text=None, cfg_args=None)

    def command(self) -> str:
        return (
            f"f={GRUB_DEFAULT}; "
            f"for d in {GRUB_DEFAULT}.d/*.cfg; do "
            "[ -f \"$d\" ] && grep -Eq '^[[:space:]]*(export[[:space:]]+)?GRUB_CMDLINE_LINUX_DEFAULT=' \"$d\" "
            '&& f=$d; done; echo "path=$f"; '
            '[ -f "$f" ] && echo "text=$(base64 < "$f" | tr -d \'\\n\')"; '
            f"[ -f {GRUB_CFG} ] && echo \"cfg=$(awk '$1 == \"linux\" "
            "{ for (i = 3; i <= NF; i++) printf \"%s \", $i; print \"\"; exit }' "
            f"{GRUB_CFG})\"; true"
        )

    def process(self, output: list[str]) -> GrubDefaultInfo:
        values: dict[str, str] = {}
        for line in output:
            key, equals, value = line.strip().partition("=")
            if equals:
                values.setdefault(key, value)
        text = None
        if "text" in values:
            try:
                text = base64.b64decode(values["text"], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                text = None
        cfg = values.get("cfg", "").strip()
        return GrubDefaultInfo(
            path=values.get("path") or GRUB_DEFAULT,
            text=text,
            cfg_args=parse_cmdline(cfg) if cfg else None,
        )


class BootEntry(TypedDict):
    path: str
    version: str | None
    args: list[list[str | None]]


class SystemdBootInfo(TypedDict):
    cmdline: str | None
    entries: list[BootEntry]


ENTRY_DIRS = ("/boot/efi/loader/entries", "/efi/loader/entries", "/boot/loader/entries")


class SystemdBoot(FactBase[SystemdBootInfo]):
    """
    What systemd-boot boots with: ``/etc/kernel/cmdline`` (the arguments ``kernel-install`` writes
    into new entries; None when the file is missing, then kernel-install takes /proc/cmdline), and
    the Boot Loader Specification entries in ``loader/entries`` on /boot/efi, /efi or /boot, each
    with its ``version`` and its ``options`` parsed like ``facts.kernel.KernelCmdline``.

    .. code:: python

        {"cmdline": "root=UUID=ab ro quiet\\n",
         "entries": [{"path": "/boot/efi/loader/entries/f00-6.17.7.conf", "version": "6.17.7",
                      "args": [["root", "UUID=ab"], ["ro", None], ["quiet", None]]}]}

    Default (no output): cmdline None, no entries.
    """

    @staticmethod
    def default() -> SystemdBootInfo:
        return SystemdBootInfo(cmdline=None, entries=[])

    def command(self) -> str:
        dirs = " ".join(f"{d}/*.conf" for d in ENTRY_DIRS)
        return (
            "[ -f /etc/kernel/cmdline ] && echo \"## cmdline $(base64 < /etc/kernel/cmdline | tr -d '\\n')\"; "
            f'for f in {dirs}; do [ -f "$f" ] || continue; echo "## entry $f"; '
            "grep -E '^(version|options)[[:space:]]' \"$f\"; done; true"
        )

    def process(self, output: list[str]) -> SystemdBootInfo:
        info = self.default()
        for name, lines in sections(output).items():
            kind, _, value = name.partition(" ")
            if kind == "cmdline":
                try:
                    info["cmdline"] = base64.b64decode(value, validate=True).decode()
                except (binascii.Error, UnicodeDecodeError):
                    info["cmdline"] = None
            elif kind == "entry" and value:
                version, options = None, []
                for line in lines:
                    key, _, rest = line.strip().partition(" ")
                    if key == "version":
                        version = rest.strip() or None
                    elif key == "options":  # several options lines add up (Boot Loader Specification)
                        options.append(rest.strip())
                info["entries"].append(BootEntry(path=value, version=version, args=parse_cmdline(" ".join(options))))
        return info
