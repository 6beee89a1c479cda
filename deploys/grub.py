"""Set the GPU kernel arguments: the TTM limit, the IOMMU mode and kernel_extra_args; reboot only if allowed.

    pyinfra inventories/lab.py deploys/grub.py
    pyinfra inventories/lab.py deploys/grub.py --data reboot_allowed=True

The arguments come from the host's data and facts: ``ttm.pages_limit`` and ``ttm.page_pool_size``
= wanted GiB x 262144 (``amdttm.*`` with AMD's DKMS driver), ``amd_iommu=off`` or ``iommu=pt``,
then ``kernel_extra_args``. Only these keys change: an argument of ours with another value is
replaced where it stands, the conflicting IOMMU key is removed, everything else stays in order.

- Fedora: ``grubby --update-kernel=ALL --args=... [--remove-args=...]``, run only when a boot entry
  lacks an argument or has another value; every entry is checked, so a run after a kernel update
  catches a new entry without them.
- Debian/Ubuntu: GRUB_CMDLINE_LINUX_DEFAULT is edited where it is set, then grub.cfg is regenerated.
  We edit the file rather than add a drop-in of our own under /etc/default/grub.d/: a drop-in can
  only append, so it could neither replace a value already there nor remove ``iommu=pt`` when
  ``amd_iommu=off`` is wanted, and the admin finds the arguments where Debian documents them. The
  file is the one whose assignment takes effect: /etc/default/grub, or the last drop-in that sets
  the variable (Ubuntu cloud images set it in 50-cloudimg-settings.cfg, read after
  /etc/default/grub, which would silently win over an edit of the main file). The old file is kept
  as ``<file>.halo-provision-<time>.bak``, the new one must parse as sh, and the regenerated
  grub.cfg must carry the arguments; otherwise the old file and the old grub.cfg are put back.
- systemd-boot (its loader.conf or EFI binary on /boot/efi, /efi or /boot; or no GRUB and an
  /etc/kernel/cmdline): the arguments go into /etc/kernel/cmdline the same way (backup
  ``/etc/kernel/cmdline.halo-provision-<time>.bak``), then ``kernel-install add`` rewrites every
  installed kernel's boot entry from it, and each entry in loader/entries must carry them; otherwise
  the old file is put back and the entries rewritten from it. Without the file, it starts from the
  running kernel's arguments, as kernel-install does.
- kernelstub (Pop!_OS): the host fails before any change with the exact ``kernelstub -d ... -a ...``
  command: kernelstub keeps its own configuration, which this step does not edit.
- The boot loader comes from ``facts.distro.Distro`` (files and tools the host has); GRUB is never
  suggested to a host that boots otherwise.
- Reboot: when /proc/cmdline lacks the arguments, a host with ``reboot_allowed`` reboots and must
  come back with them; any other host gets "reboot pending on <host>: ...".
"""

from __future__ import annotations

import base64
import re
import shlex

from pyinfra import host
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.operations import server

from deploys import shipped
from deploys.common import fail_host, warn
from deploys.plan import show_file_change
from deploys.settings import Settings, settings
from facts.amdgpu import GpuMemory, TtmLimits
from facts.distro import Distro
from facts.grub import ENTRY_DIRS, GRUB_CFG, GrubbyKernels, GrubDefault, SystemdBoot
from facts.kernel import KernelCmdline, parse_cmdline
from facts.memory import MemTotal, host_installed_ram

# key -> value, None for a flag; in the order they are added
KernelArgs = dict[str, str | None]
ParsedArgs = list[list[str | None]]

IOMMU_ARGS = {"off": ("amd_iommu", "off"), "pt": ("iommu", "pt")}
IOMMU_KEYS = ("amd_iommu", "iommu")
_MISSING = object()


def kernel_args(s: Settings, mem_total: int, gpu_memory: list[dict], ttm: dict | None) -> tuple[KernelArgs, list[str]]:
    """The arguments to set and the keys to remove, from the settings and the host's facts.

    >>> kernel_args(Settings(), 134486163456, [{"vram_total": 512 << 20}], {"module": "ttm"})
    ({'ttm.pages_limit': '31457280', 'ttm.page_pool_size': '31457280', 'amd_iommu': 'off'}, ['iommu'])
    """
    pages = str(s.ttm_pages(host_installed_ram(mem_total, gpu_memory)))
    module = "amdttm" if (ttm or {}).get("module") == "amdttm" else "ttm"
    wanted: KernelArgs = {f"{module}.pages_limit": pages, f"{module}.page_pool_size": pages}
    remove: list[str] = []
    if s.iommu_mode in IOMMU_ARGS:
        key, value = IOMMU_ARGS[s.iommu_mode]
        wanted[key] = value
        remove = [k for k in IOMMU_KEYS if k != key]
    for arg in s.kernel_extra_args:
        key, equals, value = arg.partition("=")
        wanted[key] = value if equals else None
    return wanted, remove


def format_arg(key: str, value: str | None) -> str:
    return key if value is None else f"{key}={value}"


def _norm(key: str | None) -> str:
    """The kernel matches parameter names with - and _ alike."""
    return (key or "").replace("-", "_")


def args_to_change(args: ParsedArgs | None, wanted: KernelArgs, remove: list[str]) -> tuple[list[str], list[str]]:
    """What a parsed command line lacks: (arguments to set, as "k=v"/"flag"; keys to remove).

    The last occurrence of a key counts, as in the kernel.
    """
    last: dict[str, str | None] = {}
    for key, value in args or []:
        last[_norm(key)] = value
    to_set = [format_arg(k, v) for k, v in wanted.items() if last.get(_norm(k), _MISSING) != v]
    to_remove = [k for k in remove if _norm(k) in last]
    return to_set, to_remove


def describe(to_set: list[str], to_remove: list[str]) -> str:
    parts = [f"lacks {' '.join(to_set)}"] if to_set else []
    parts += [f"still has {' '.join(to_remove)}"] if to_remove else []
    return " and ".join(parts)


# --- Fedora: grubby ---------------------------------------------------------------------------


def grubby_command(kernels: list[dict], wanted: KernelArgs, remove: list[str]) -> str | None:
    """The grubby command that gives every boot entry the arguments, or None when all have them."""
    needed_set: set[str] = set()
    needed_remove: set[str] = set()
    for kernel in kernels:
        to_set, to_remove = args_to_change(kernel["args"], wanted, remove)
        needed_set.update(to_set)
        needed_remove.update(to_remove)
    to_set = [a for a in (format_arg(k, v) for k, v in wanted.items()) if a in needed_set]
    to_remove = [k for k in remove if k in needed_remove]
    if not to_set and not to_remove:
        return None
    command = ["grubby", "--update-kernel=ALL"]
    if to_set:
        command.append("--args=" + " ".join(to_set))
    if to_remove:
        command.append("--remove-args=" + " ".join(to_remove))
    return shlex.join(command)


# --- Debian/Ubuntu: /etc/default/grub -------------------------------------------------------------

_ASSIGNMENT = re.compile(r"^(\s*(?:export\s+)?(GRUB_CMDLINE_LINUX(?:_DEFAULT)?)=)(.*)$")
_VALUE = re.compile(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([^\s"\'#;]*)')
# words of a value; an escaped "..." (dyndbg=\"file x +p\") stays one word
_WORD = re.compile(r'(?:\\"(?:(?!\\").)*\\"|\S)+')


def _edit_words(words: list[str], wanted: KernelArgs, remove: list[str]) -> list[str]:
    """Replace our keys' values where they stand (first occurrence only), drop removed keys."""
    wanted_by_key = {_norm(k): format_arg(k, v) for k, v in wanted.items()}
    removed = {_norm(k) for k in remove}
    result, placed = [], set()
    for word in words:
        key = _norm(word.partition("=")[0])
        if key in removed or key in placed:
            continue
        if key in wanted_by_key:
            word = wanted_by_key[key]
            placed.add(key)
        result.append(word)
    return result


def edit_grub_default(text: str, wanted: KernelArgs, remove: list[str]) -> str:
    """/etc/default/grub text with the kernel arguments in GRUB_CMDLINE_LINUX_DEFAULT.

    In every GRUB_CMDLINE_LINUX_DEFAULT and GRUB_CMDLINE_LINUX assignment, an argument of ours is
    replaced where it stands and a removed key is dropped; arguments neither line has yet are
    appended to the last GRUB_CMDLINE_LINUX_DEFAULT (a new line at the end when there is none).
    Comments, quoting and all other lines stay as they are. Raises ValueError for a value it
    cannot read (e.g. a quote left open across lines).

    >>> edit_grub_default('GRUB_CMDLINE_LINUX_DEFAULT="quiet iommu=pt"\\n', {"amd_iommu": "off"}, ["iommu"])
    'GRUB_CMDLINE_LINUX_DEFAULT="quiet amd_iommu=off"\\n'
    """
    lines = text.splitlines(keepends=True)
    edited: dict[int, tuple[str, list[str]]] = {}  # line number -> (variable, words)
    for number, line in enumerate(lines):
        match = _ASSIGNMENT.match(line.rstrip("\n"))
        if not match:
            continue
        head, variable, rest = match.groups()
        value = _VALUE.match(rest)
        quote = '"' if value.group(1) is not None else "'" if value.group(2) is not None else ""
        inner = next(g for g in value.groups() if g is not None)
        tail = rest[value.end():]
        if tail.strip() and not tail.lstrip().startswith(("#", ";")):
            raise ValueError(f"line {number + 1}: cannot read the value of {variable}: {line.strip()}")
        words = _edit_words(_WORD.findall(inner), wanted, remove)
        edited[number] = (variable, words)
        if not quote and len(words) > 1:
            quote = '"'
        newline = "\n" if line.endswith("\n") else ""
        lines[number] = f"{head}{quote}{' '.join(words)}{quote}{tail}{newline}"

    def last_of(variable: str) -> int | None:
        return max((n for n, (v, _) in edited.items() if v == variable), default=None)

    default_line, linux_line = last_of("GRUB_CMDLINE_LINUX_DEFAULT"), last_of("GRUB_CMDLINE_LINUX")
    present = {
        word for n in (default_line, linux_line) if n is not None for word in edited[n][1]
    }
    missing = [format_arg(k, v) for k, v in wanted.items() if format_arg(k, v) not in present]
    if not missing:
        return "".join(lines)
    if default_line is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(f'GRUB_CMDLINE_LINUX_DEFAULT="{" ".join(missing)}"\n')
        return "".join(lines)
    head, _, rest = _ASSIGNMENT.match(lines[default_line].rstrip("\n")).groups()
    value = _VALUE.match(rest)
    quote = rest[0] if rest[:1] in ('"', "'") else '"'
    words = edited[default_line][1] + missing
    newline = "\n" if lines[default_line].endswith("\n") else ""
    lines[default_line] = f"{head}{quote}{' '.join(words)}{quote}{rest[value.end():]}{newline}"
    return "".join(lines)


def cfg_check_script(wanted: KernelArgs, remove: list[str], cfg: str = GRUB_CFG) -> str:
    """sh: exit 0 when the default entry (first linux line) of grub.cfg has the arguments, else say what lacks."""
    program = (
        'function key(a) { sub(/=.*/, "", a); gsub(/-/, "_", a); return a } '
        '$1 == "linux" { for (i = 3; i <= NF; i++) last[key($i)] = $i; found = 1; exit } '
        "END { if (!found) { print cfg \": no linux line (no kernel in /boot?)\"; exit 1 } "
        'n = split(want, w, " "); for (i = 1; i <= n; i++) '
        'if (last[key(w[i])] != w[i]) { print cfg ": the default entry lacks " w[i]; bad = 1 } '
        'n = split(gone, g, " "); for (i = 1; i <= n; i++) '
        'if (key(g[i]) in last) { print cfg ": the default entry still has " last[key(g[i])]; bad = 1 } '
        "exit (bad ? 1 : 0) }"
    )
    want = " ".join(format_arg(k, v) for k, v in wanted.items())
    return shlex.join(["awk", "-v", f"cfg={cfg}", "-v", f"want={want}", "-v", f"gone={' '.join(remove)}",
                       program, cfg])


def apply_script(path: str, new_text: str | None, wanted: KernelArgs, remove: list[str]) -> str:
    """deploys/scripts/grub-apply.sh as one command: back up and replace `path` (unless new_text is None),
    regenerate grub.cfg, check it; undo on failure."""
    env = {"HALO_FILE": path, "HALO_CFG": GRUB_CFG, "HALO_NEW": _base64(new_text),
           "HALO_CHECK": cfg_check_script(wanted, remove)}
    return str(shipped.script_command("grub-apply.sh", env))


def _base64(text: str | None) -> str:
    """A file's new text for the apply scripts: base64 (empty: leave the file as it is)."""
    return base64.b64encode(text.encode()).decode() if text is not None else ""


# --- systemd-boot: /etc/kernel/cmdline and kernel-install ------------------------------------------

KERNEL_CMDLINE = "/etc/kernel/cmdline"
# /proc/cmdline words kernel-install leaves out when /etc/kernel/cmdline is missing (the boot loader adds them)
_LOADER_KEYS = ("BOOT_IMAGE", "initrd")
_CMDLINE_WORD = re.compile(r'(?:[^\s"]|"[^"]*(?:"|$))+')


def kernel_cmdline_text(current: str | None, running: ParsedArgs, wanted: KernelArgs, remove: list[str]) -> str:
    """/etc/kernel/cmdline with the arguments: ours replaced where they stand, removed keys dropped, the
    missing ones appended. Without the file, start from the running kernel's arguments, as kernel-install
    does then.

    >>> kernel_cmdline_text("root=UUID=ab ro iommu=pt\\n", [], {"amd_iommu": "off"}, ["iommu"])
    'root=UUID=ab ro amd_iommu=off\\n'
    >>> kernel_cmdline_text(None, [["BOOT_IMAGE", "/vmlinuz"], ["root", "/dev/sda1"]], {"quiet": None}, [])
    'root=/dev/sda1 quiet\\n'
    """
    if current is None:
        words = [format_arg(k or "", f'"{v}"' if v and " " in v else v) for k, v in running if k not in _LOADER_KEYS]
    else:
        words = _CMDLINE_WORD.findall(current)
    words = _edit_words(words, wanted, remove)
    present = {_norm(w.partition("=")[0]) for w in words}
    words += [format_arg(k, v) for k, v in wanted.items() if _norm(k) not in present]
    return " ".join(words) + "\n"


def entries_check_script(wanted: KernelArgs, remove: list[str]) -> str:
    """sh: exit 0 when there is a boot entry and every entry's options carry the arguments, else say what lacks."""
    program = (
        'function key(a) { sub(/=.*/, "", a); gsub(/-/, "_", a); return a } '
        '$1 == "options" { for (i = 2; i <= NF; i++) last[key($i)] = $i } '
        'END { n = split(want, w, " "); for (i = 1; i <= n; i++) '
        'if (last[key(w[i])] != w[i]) { print FILENAME ": lacks " w[i]; bad = 1 } '
        'n = split(gone, g, " "); for (i = 1; i <= n; i++) '
        'if (key(g[i]) in last) { print FILENAME ": still has " last[key(g[i])]; bad = 1 } '
        "exit (bad ? 1 : 0) }"
    )
    want = " ".join(format_arg(k, v) for k, v in wanted.items())
    awk = shlex.join(["awk", "-v", f"want={want}", "-v", f"gone={' '.join(remove)}", program])
    dirs = " ".join(f"{d}/*.conf" for d in ENTRY_DIRS)
    return f"""(n=0; bad=0
for e in {dirs}; do
  [ -f "$e" ] && grep -q '^version[[:space:]]' "$e" || continue
  n=$((n + 1)); {awk} "$e" || bad=1
done
if [ "$n" = 0 ]; then echo "no boot entries (loader/entries/*.conf) after kernel-install: unified kernel images \
(EFI/Linux/*.efi) carry their arguments inside, which this step cannot check"; exit 1; fi
exit "$bad")"""


def systemd_boot_script(new_text: str | None, wanted: KernelArgs, remove: list[str]) -> str:
    """deploys/scripts/systemd-boot-apply.sh as one command: back up and replace /etc/kernel/cmdline (unless
    new_text is None), rewrite every installed kernel's boot entry with kernel-install, check the entries;
    on failure put the file back and rewrite them again."""
    env = {"HALO_FILE": KERNEL_CMDLINE, "HALO_NEW": _base64(new_text),
           "HALO_CHECK": entries_check_script(wanted, remove)}
    return str(shipped.script_command("systemd-boot-apply.sh", env))


def kernelstub_command(running: ParsedArgs | None, wanted: KernelArgs, remove: list[str]) -> str:
    """The kernelstub command that gives Pop!_OS's boot entry the arguments: the running kernel's values of
    our keys deleted (-d), ours added (-a).

    >>> kernelstub_command([["quiet", None], ["iommu", "pt"]], {"amd_iommu": "off"}, ["iommu"])
    'kernelstub -d iommu=pt -a amd_iommu=off'
    """
    to_set, _ = args_to_change(running, wanted, remove)
    keys = {_norm(k.partition("=")[0]) for k in to_set} | {_norm(k) for k in remove}
    old = [format_arg(k or "", v) for k, v in running or [] if _norm(k) in keys]
    command = ["kernelstub"] + (["-d", " ".join(old)] if old else []) + (["-a", " ".join(to_set)] if to_set else [])
    return shlex.join(command)


def _fail_command(message: str) -> StringCommand:
    return StringCommand(f"echo {shlex.quote(message)}; exit 1")


@operation()
def grub_default_args(wanted: KernelArgs, remove: list[str]):
    """Put the arguments into GRUB_CMDLINE_LINUX_DEFAULT and grub.cfg; reads the files when it runs."""
    config = host.get_fact(GrubDefault)
    path = config["path"]
    if config["text"] is None:
        yield _fail_command(f"{host.name}: {path} is missing although GRUB's tools are installed, so the kernel "
                            f"arguments cannot be set: restore it, or, if this host boots with systemd-boot, "
                            f"write its kernel arguments to {KERNEL_CMDLINE} and run this step again")
        return
    try:
        new_text = edit_grub_default(config["text"], wanted, remove)
    except ValueError as e:
        yield _fail_command(f"{host.name}: cannot edit {path}: {e}; fix the line by hand and run again")
        return
    to_set, to_remove = args_to_change(config["cfg_args"], wanted, remove)
    if new_text == config["text"] and config["cfg_args"] is not None and not to_set and not to_remove:
        host.noop(f"{path} and {GRUB_CFG} already carry the kernel arguments")
        return
    show_file_change(path, config["text"], new_text)
    yield StringCommand(apply_script(path, None if new_text == config["text"] else new_text, wanted, remove))


@operation()
def systemd_boot_args(wanted: KernelArgs, remove: list[str]):
    """Put the arguments into /etc/kernel/cmdline and every boot entry; reads the files when it runs."""
    config = host.get_fact(SystemdBoot)
    current = config["cmdline"]
    file_ok = current is not None and args_to_change(parse_cmdline(current), wanted, remove) == ([], [])
    entries_ok = bool(config["entries"]) and all(
        args_to_change(e["args"], wanted, remove) == ([], []) for e in config["entries"] if e["version"])
    if file_ok and entries_ok:
        host.noop(f"{KERNEL_CMDLINE} and the boot entries already carry the kernel arguments")
        return
    new_text = None if file_ok else kernel_cmdline_text(current, host.get_fact(KernelCmdline), wanted, remove)
    if new_text is not None:
        show_file_change(KERNEL_CMDLINE, current, new_text)
    yield StringCommand(systemd_boot_script(new_text, wanted, remove))


@operation()
def running_kernel_has_args(wanted: KernelArgs, remove: list[str]):
    """Fail the host when /proc/cmdline (read when this runs) lacks the arguments."""
    to_set, to_remove = args_to_change(host.get_fact(KernelCmdline), wanted, remove)
    if not to_set and not to_remove:
        host.noop("the running kernel has the arguments")
        return
    yield _fail_command(f"{host.name}: after the reboot /proc/cmdline {describe(to_set, to_remove)}: the boot "
                        "loader did not use the new configuration (another boot loader or boot entry?)")


def reads(s: Settings) -> list:
    """The facts this step reads that deploys/verify.host_reads does not (for deploys/full.py's one prefetch)."""
    return [(GrubDefault, {})]


@deploy("Set the GPU kernel arguments")
def grub_kernel_args() -> None:
    s = settings(host)
    style = host.get_fact(Distro)["boot_loader"]
    mem_total = host.get_fact(MemTotal)
    if style is None:
        fail_host("Fail: no known boot loader", "found neither GRUB (/etc/default/grub, grubby, update-grub), "
                  f"systemd-boot (loader/loader.conf on /boot/efi, /efi or /boot; {KERNEL_CMDLINE}) nor "
                  "kernelstub (/etc/kernelstub/configuration): set the kernel arguments with your boot loader's tool")
        return
    if mem_total is None:
        fail_host("Fail: cannot size the TTM limit", "cannot read MemTotal from /proc/meminfo")
        return
    wanted, remove = kernel_args(s, mem_total, host.get_fact(GpuMemory), host.get_fact(TtmLimits))
    running = host.get_fact(KernelCmdline)

    if style == "kernelstub":  # Pop!_OS: kernelstub owns the boot entry and /etc/kernel/cmdline is not read
        command = kernelstub_command(running, wanted, remove) if args_to_change(running, wanted, remove) != ([], []) \
            else None
        if command:
            fail_host("Fail: kernelstub sets the kernel arguments here",
                      f"this host boots through kernelstub (/etc/kernelstub/configuration), which halo-provision "
                      f"does not edit; run as root: {command} && reboot; then run this step again")
            return
    elif style == "systemd-boot":
        systemd_boot_args(name=f"Set the kernel arguments in {KERNEL_CMDLINE} and the systemd-boot entries",
                          wanted=wanted, remove=remove)
    elif style == "grubby":
        kernels = host.get_fact(GrubbyKernels)
        if not kernels:
            fail_host("Fail: grubby lists no boot entry", "`grubby --info=ALL` shows no kernel: install grubby "
                      "(dnf install grubby) or check /boot/loader/entries")
            return
        command = grubby_command(kernels, wanted, remove)
        if command:
            server.shell(name="Set the kernel arguments of every boot entry with grubby", commands=[command])
    else:
        grub_default_args(name="Set the kernel arguments in GRUB_CMDLINE_LINUX_DEFAULT and regenerate grub.cfg",
                          wanted=wanted, remove=remove)

    to_set, to_remove = args_to_change(running, wanted, remove)
    if not to_set and not to_remove:
        return
    if s.reboot_allowed:
        server.reboot(name="Reboot into the new kernel arguments", reboot_timeout=s.reboot_timeout_s)
        running_kernel_has_args(name="Check the running kernel has the new arguments", wanted=wanted, remove=remove)
    else:
        warn(f"reboot pending on {host.name}: the running kernel {describe(to_set, to_remove)}; the arguments "
             "apply at the next boot (reboot it, or set reboot_allowed = True)")


if __name__ in ("builtins", "__main__"):
    grub_kernel_args()
