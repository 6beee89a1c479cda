"""The test lab: real booted Debian hosts on this machine, each with a fake Strix Halo GPU.

Each lab host is a systemd container (``systemd-nspawn --boot``) with its own network namespace on
the bridge ``halo-lab0`` (10.151.0.0/24, this machine is 10.151.0.1), root SSH with a key the lab
generates, and per-host SSH host keys the lab records in a known_hosts file. Its root file system
is an ext4 file system on a block device of its own (a loop device over a sparse image file),
made from a Debian rootfs that debootstrap builds once (cached under ``HALO_LAB_CACHE``). So
grub-probe and update-grub work as on a real box (on an overlay root grub-probe fails), and /boot
has a Debian kernel for grub.cfg.
The fake GPU is only what the kernel would expose: files under /var/lib/halo-lab/sysfs in the host,
laid over /sys/class/drm, /sys/class/kfd, /sys/module/ttm, ... at boot (fake-sysfs.sh).

    python -m lab start 3                  # halo1 (Debian 12), halo2 (13), halo3 (12)
    python -m lab start halo1:12 halo2:13  # names and Debian releases
    python -m lab start halo1:forky        # Debian testing: its archive has a HIP for llama.cpp
    python -m lab stop                     # nothing is left behind

``start`` writes, in ``HALO_LAB_STATE`` (default /var/lib/halo-lab): ``inventory.py`` (for
pyinfra), ``hosts.txt`` (the --hosts list for testinfra) and ``ssh_config`` (for ssh and testinfra).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab.gpu import GpuProfile, write_fake_sysfs

LAB_DIR = Path(__file__).resolve().parent
# HALO_LAB_ID (0-9) lets several labs run side by side: each has its own state, bridge and subnet.
LAB_ID = int(os.environ.get("HALO_LAB_ID", "0"))
STATE = Path(os.environ.get("HALO_LAB_STATE", "/var/lib/halo-lab" + (f"-{LAB_ID}" if LAB_ID else "")))
CACHE = Path(os.environ.get("HALO_LAB_CACHE", "/var/cache/halo-lab"))
BRIDGE = f"halo-lab{LAB_ID}"
SUBNET = f"10.151.{LAB_ID}"  # lab hosts are .11, .12, ...; this machine is .1 on the bridge
NETNS_PREFIX = f"halo-lab{LAB_ID}-"
VETH_PREFIX = f"hl{LAB_ID}-"
NFT_TABLE = f"halo_lab{LAB_ID}"  # NAT of the lab subnet, so hosts reach the Debian archive
# Debian release -> suite. "forky" is Debian testing (no number yet): the lab's only release whose own
# archive has a HIP >= 6.1 (hipcc 7.0.2, HIP 6.4.3, rocBLAS/hipBLAS 6.4.4 in 2026-11), which llama.cpp's
# HIP backend needs; debootstrap has no script named forky, so testing releases use sid's (DEBOOTSTRAP_SCRIPT).
RELEASES = {"12": "bookworm", "13": "trixie", "forky": "forky"}
DEBOOTSTRAP_SCRIPT = {"forky": "/usr/share/debootstrap/scripts/sid"}
# A testing Release file carries a Valid-Until a week or two ahead; the archive this lab has reached served
# one expired by this machine's clock, and apt-get update then fails ("Release file ... is expired"). Lab hosts of a
# testing release accept it (stable releases have no Valid-Until).
TESTING_RELEASES = {"forky"}
APT_NO_VALID_UNTIL = 'Acquire::Check-Valid-Until "false";  // lab: a testing Release may be expired here\n'
PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "python3", "sudo",
    "procps", "ca-certificates",
    "grub2-common", "grub-pc-bin",  # what a real Debian box boots with: the GRUB step edits and regenerates it
    "linux-image-cloud-amd64",  # a kernel (and its initramfs) in /boot, so grub.cfg gets a menu entry
]
ROOTFS_LAYOUT = 2  # bump when the rootfs preparation below changes
ROOT_DISK_BYTES = 32 << 30  # sparse image file: takes only the space the host's files use
LOOP_FIRST = 100  # lab root devices are /dev/loop100 and up (100 per HALO_LAB_ID), see make_root_disk
LOOP_CTL_ADD = 0x4C80
BOOT_TIMEOUT_S = 240  # generous: a loaded 2-core machine has taken over 90 s
# Every lab host's systemd holds several inotify instances, and all labs' hosts count against this
# machine's root limit (128 by default): below it, a booting host dies with "Too many open files".
INOTIFY_INSTANCES = 8192
STOP_TIMEOUT_S = 30


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says why and what to do."""


@dataclass
class LabHost:
    """One lab host: its name, address on the lab bridge, Debian release and fake GPU."""

    name: str
    address: str
    release: str = "12"
    gpu: GpuProfile = field(default_factory=GpuProfile)

    @property
    def dir(self) -> Path:
        return STATE / "hosts" / self.name

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def netns(self) -> str:
        return NETNS_PREFIX + self.name

    @property
    def veth(self) -> str:
        return VETH_PREFIX + self.name


def run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command on this machine; on failure raise LabError with its output."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


# --- the cached Debian rootfs -------------------------------------------------------------

def debian_mirror() -> str:
    """The Debian archive this machine's apt uses (HALO_LAB_MIRROR overrides)."""
    if os.environ.get("HALO_LAB_MIRROR"):
        return os.environ["HALO_LAB_MIRROR"]
    sources = sorted(Path("/etc/apt").glob("sources.list.d/*.sources")) + [Path("/etc/apt/sources.list")]
    for path in sources:
        text = path.read_text() if path.is_file() else ""
        for url in re.findall(r"(?:URIs:|deb)\s+(?:\[[^\]]*\]\s+)?(https?://\S+)", text):
            if "security" not in url and url.rstrip("/").endswith("/debian"):
                return url
    return "http://deb.debian.org/debian"


def rootfs_key(release: str) -> str:
    payload = json.dumps([release, PACKAGES, ROOTFS_LAYOUT])
    return f"debian{release}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def ensure_rootfs(release: str) -> Path:
    """Return the cached rootfs for a Debian release, building it with debootstrap if missing."""
    if release not in RELEASES:
        raise LabError(f"Debian release {release!r} is not supported by the lab; use one of {sorted(RELEASES)}")
    target = CACHE / "rootfs" / rootfs_key(release)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "rootfs" / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_dir():
            return target
        build = target.with_name(target.name + ".building")
        shutil.rmtree(build, ignore_errors=True)
        print(f"lab: debootstrap Debian {release} ({RELEASES[release]}) into the cache, once", flush=True)
        script = [DEBOOTSTRAP_SCRIPT[release]] if release in DEBOOTSTRAP_SCRIPT else []
        run("debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
            RELEASES[release], str(build), debian_mirror(), *script)
        prepare_rootfs(build)
        build.rename(target)
    return target


def prepare_rootfs(root: Path) -> None:
    """Lab-only changes to a fresh rootfs: no shared SSH host keys, no machine id, quiet timers."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer",
                 "systemd-networkd-wait-online.service"):
        (root / "etc/systemd/system" / unit).unlink(missing_ok=True)
        (root / "etc/systemd/system" / unit).symlink_to("/dev/null")
    (root / "etc/machine-id").write_text("")
    # What grub-pc's postinst installs (the lab has no boot sector to install GRUB to).
    shutil.copy(root / "usr/share/grub/default/grub", root / "etc/default/grub")
    (root / "boot/grub").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True)


def install_fake_sysfs_unit(root: Path) -> None:
    """The boot unit that lays the fake GPU files over /sys (fake-sysfs.sh) in one host."""
    script = root / "usr/local/sbin/halo-lab-fake-sysfs"
    shutil.copy(LAB_DIR / "fake-sysfs.sh", script)
    script.chmod(0o755)
    (root / "etc/systemd/system/halo-lab-fake-sysfs.service").write_text(
        "[Unit]\nDescription=Lab: fake Strix Halo GPU files over /sys\nDefaultDependencies=no\n"
        "After=local-fs.target\nBefore=sysinit.target ssh.service\n\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/local/sbin/halo-lab-fake-sysfs\n\n"
        "[Install]\nWantedBy=sysinit.target\n"
    )
    wants = root / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "halo-lab-fake-sysfs.service").symlink_to("/etc/systemd/system/halo-lab-fake-sysfs.service")


# --- network ----------------------------------------------------------------------------------

def ensure_bridge() -> None:
    """The lab bridge, with this machine at .1 and NAT so hosts reach the Debian archive."""
    if run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    run("nft", "-f", "-", input=(
        f"table ip {NFT_TABLE} {{}}\ndelete table ip {NFT_TABLE}\n"
        f"table ip {NFT_TABLE} {{\n chain postrouting {{\n  type nat hook postrouting priority srcnat;\n"
        f"  ip saddr {SUBNET}.0/24 oifname != \"{BRIDGE}\" masquerade\n }}\n}}\n"))


def plug_host(host: LabHost) -> None:
    """A network namespace for the host, joined to the bridge by a veth pair (eth0 inside)."""
    run("ip", "netns", "add", host.netns)
    run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
    run("ip", "link", "set", host.veth, "master", BRIDGE, "up")
    ns = ("ip", "-n", host.netns)
    run(*ns, "link", "set", "lo", "up")
    run(*ns, "addr", "add", f"{host.address}/24", "dev", "eth0")
    run(*ns, "link", "set", "eth0", "up")
    run(*ns, "route", "add", "default", "via", f"{SUBNET}.1")


# --- hosts ------------------------------------------------------------------------------------

def default_hosts(count: int) -> list[LabHost]:
    """halo1..haloN on .11.., alternating Debian 12 and 13 (halo1 is 12)."""
    return [LabHost(f"halo{i}", f"{SUBNET}.{10 + i}", "12" if i % 2 else "13") for i in range(1, count + 1)]


def parse_host_args(args: list[str]) -> list[LabHost]:
    """`3` -> default_hosts(3); `halo1:12 halo2:13` -> named hosts with releases."""
    if len(args) == 1 and args[0].isdigit():
        return default_hosts(int(args[0]))
    hosts = []
    for i, arg in enumerate(args, start=1):
        name, _, release = arg.partition(":")
        hosts.append(LabHost(name, f"{SUBNET}.{10 + i}", release or "12"))
    return hosts


def check_names(hosts: list[LabHost]) -> None:
    for host in hosts:
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,11}", host.name):
            raise LabError(f"lab host name {host.name!r}: use 1-12 of a-z, 0-9, - (it names a network link)")
    if len({h.name for h in hosts}) != len(hosts) or len({h.address for h in hosts}) != len(hosts):
        raise LabError("lab host names and addresses must be unique")


def prepare_host(host: LabHost, lower: Path, pubkey: str, all_hosts: list[LabHost]) -> None:
    """The host's root device made from the cached rootfs and mounted; then the per-host files."""
    host.root.mkdir(parents=True, exist_ok=True)
    disk = make_root_disk(host.dir / "disk.img", lower, host.name)
    (host.dir / "disk.device").write_text(disk)
    run("mount", disk, str(host.root))
    run("losetup", "--detach", disk)  # autoclear: the loop device goes when its file system is unmounted
    root = host.root
    (root / "etc/hostname").write_text(host.name + "\n")
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    hosts_lines = [f"{h.address}\t{h.name}" for h in all_hosts]
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost\n" + "\n".join(hosts_lines) + "\n")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(pubkey)
    (ssh_dir / "authorized_keys").chmod(0o600)
    run("ssh-keygen", "-A", "-f", str(root))
    if host.release in TESTING_RELEASES:
        (root / "etc/apt/apt.conf.d/99halo-lab-valid-until").write_text(APT_NO_VALID_UNTIL)
    install_fake_sysfs_unit(root)
    write_fake_sysfs(root, host.gpu)
    (host.dir / "host.json").write_text(json.dumps({**asdict(host), "rootfs": str(lower)}, indent=1))


def make_root_disk(image: Path, rootfs: Path, label: str) -> str:
    """`rootfs` as ext4 in a sparse image file, attached to a loop device numbered 100 or more.

    A host's root must be a block device for grub-probe. GRUB's scripts take /dev/loop0 to
    /dev/loop9 for loop-mounted image files and look for the backing file, which is not inside
    the host; they probe larger numbers as disks. (zram worked too, but it keeps every written
    block in RAM, and this kernel reads no partition tables, so no partitioned image either.)
    """
    with open(image, "wb") as f:
        f.truncate(ROOT_DISK_BYTES)
    run("mkfs.ext4", "-q", "-L", label, "-d", str(rootfs), str(image))
    control = os.open("/dev/loop-control", os.O_RDWR)
    try:
        for number in range(LOOP_FIRST + 100 * LAB_ID, LOOP_FIRST + 100 * LAB_ID + 100):
            try:
                fcntl.ioctl(control, LOOP_CTL_ADD, number)
            except FileExistsError:
                pass
            if run("losetup", f"/dev/loop{number}", str(image), check=False).returncode == 0:
                return f"/dev/loop{number}"
    finally:
        os.close(control)
    raise LabError(f"no free loop device from /dev/loop{LOOP_FIRST + 100 * LAB_ID} on: losetup --list")


def release_root_disks(devices: list[str], timeout: float = 4 * STOP_TIMEOUT_S) -> None:
    """Wait until the hosts' root devices are free after the unmounts, then remove them.

    Loop devices detach by themselves once unmounted (autoclear). zram devices (from an older lab)
    are reset. Devices still busy at the timeout are retried by the next stop (``disks`` in leftovers()).
    """
    pending_file = STATE / "disks-pending"
    for old in (pending_file, STATE / "zram-pending"):  # zram-pending: written by an older lab
        if old.is_file():
            devices = devices + old.read_text().split()
            old.unlink()
    pending = list(dict.fromkeys(devices))
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for device in list(pending):
            name = device.removeprefix("/dev/")
            try:
                if name.startswith("zram"):
                    Path(f"/sys/block/{name}/reset").write_text("1")
                    Path("/sys/class/zram-control/hot_remove").write_text(name.removeprefix("zram"))
                elif Path(f"/sys/block/{name}/loop").exists():
                    continue  # still attached: its file system is not gone yet
            except FileNotFoundError:
                pass
            except OSError:  # busy until its file system is gone
                continue
            pending.remove(device)
        time.sleep(0.2 if pending else 0)
    for device in list(pending):  # autoclear did not come: detach it ourselves where nothing holds it
        if device.startswith("/dev/loop"):
            run("losetup", "-d", device, check=False)
            if not Path(f"/sys/block/{device.removeprefix('/dev/')}/loop").exists():
                pending.remove(device)
    if pending:
        pending_file.write_text(" ".join(pending) + "\n")
    else:
        pending_file.unlink(missing_ok=True)


def boot_host(host: LabHost) -> None:
    """Start `systemd-nspawn --boot` in the background; its console goes to console.log."""
    limit = Path("/proc/sys/fs/inotify/max_user_instances")
    if int(limit.read_text()) < INOTIFY_INSTANCES:  # raised, never lowered
        limit.write_text(f"{INOTIFY_INSTANCES}\n")
    log = open(host.dir / "console.log", "ab")
    archives = seed_apt_archives(host)
    ccache = CACHE / "ccache" / host.release  # compiler cache shared by the hosts of one release
    ccache.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
    disk = (host.dir / "disk.device").read_text()
    proc = subprocess.Popen(
        ["systemd-nspawn", "--boot", f"--directory={host.root}", f"--machine={host.name}",
         f"--hostname={host.name}", "--register=no", "--keep-unit", "--console=read-only",
         f"--network-namespace-path=/run/netns/{host.netns}", f"--bind={archives}:/var/cache/apt/archives",
         f"--bind={ccache}:/root/.cache/ccache",
         "--capability=CAP_NET_ADMIN",  # nftables inside, for the RPC firewall (only the host's own netns)
         f"--bind={disk}"],  # the root device, for grub-probe
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    (host.dir / "nspawn.pid").write_text(str(proc.pid))


def seed_apt_archives(host: LabHost) -> Path:
    """The host's own apt archive directory, holding hard links to every .deb the lab has downloaded.

    Each host has its own directory (apt locks it for a whole install, so one shared directory would
    make concurrent installs fail); keep_apt_archives() links new downloads back when the host stops.
    """
    shared = CACHE / "apt-archives" / host.release
    own = host.dir / "apt-archives"
    for directory in (shared, own / "partial"):
        directory.mkdir(parents=True, exist_ok=True)
    for deb in shared.glob("*.deb"):
        if not (own / deb.name).exists():
            os.link(deb, own / deb.name)
    return own


def keep_apt_archives(host_dir: Path, release: str) -> None:
    """Link the .debs a host downloaded into the shared cache, for the next hosts and runs."""
    shared = CACHE / "apt-archives" / release
    for deb in (host_dir / "apt-archives").glob("*.deb"):
        if not (shared / deb.name).exists():
            os.link(deb, shared / deb.name)


def wait_ready(hosts: list[LabHost], timeout: float = BOOT_TIMEOUT_S) -> None:
    """Wait until every host answers SSH and systemd has finished booting."""
    deadline = time.monotonic() + timeout
    pending = list(hosts)
    while pending:
        host = pending[0]
        if time.monotonic() > deadline:
            tail = (host.dir / "console.log").read_text(errors="replace")[-2000:]
            raise LabError(f"lab host {host.name} did not boot within {timeout:.0f} s; console:\n{tail}")
        if not is_alive(host):
            tail = (host.dir / "console.log").read_text(errors="replace")[-2000:]
            raise LabError(f"lab host {host.name} exited while booting; console:\n{tail}")
        probe = ssh(host, "systemctl is-system-running --wait", check=False, timeout=max(1, deadline - time.monotonic()))
        if probe.stdout.strip() in ("running", "degraded"):
            pending.pop(0)
        else:
            time.sleep(0.5)


def ssh(host: LabHost | str, command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a command on a lab host as root over SSH."""
    name = host.name if isinstance(host, LabHost) else host
    try:
        return run("ssh", "-F", str(STATE / "ssh_config"), name, command, check=check, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        if check:
            raise LabError(f"ssh {name} {command!r} timed out") from exc
        return subprocess.CompletedProcess(exc.cmd, 124, "", "timeout")


def is_alive(host: LabHost) -> bool:
    pid = nspawn_pid(host)
    if pid is None or process_gone(pid):
        return False
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"systemd-nspawn")
    except FileNotFoundError:
        return False


def process_gone(pid: int) -> bool:
    """True once a process has exited; reaps it when it is our child (the lab started it)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state in ("Z", "X")


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def nspawn_pid(host: LabHost) -> int | None:
    try:
        return int((host.dir / "nspawn.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None


def host_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) used so far by each running lab host: every process its nspawn
    started, with the children they reaped. The difference over a run is what the run cost the hosts.

        before = host_cpu_seconds(); ...; used = {h: host_cpu_seconds()[h] - before.get(h, 0) for h in before}
    """
    tick, cpu, parent = os.sysconf("SC_CLK_TCK"), {}, {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # it just ended
            parent[int(proc.name)] = int(fields[1])
            cpu[int(proc.name)] = sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    roots = {pid: h.name for h in load_hosts() if (pid := nspawn_pid(h))}
    used: dict[str, float] = {}
    for pid, seconds in cpu.items():
        ancestor = pid
        while ancestor > 1 and ancestor not in roots:
            ancestor = parent.get(ancestor, 0)
        if ancestor in roots:
            used[roots[ancestor]] = used.get(roots[ancestor], 0.0) + seconds
    return used


# --- the files tools read -----------------------------------------------------------------

def write_client_files(hosts: list[LabHost]) -> None:
    """ssh_config, known_hosts, hosts.txt (testinfra) and inventory.py (pyinfra) for the lab."""
    key = STATE / "id_ed25519"
    known = []
    config = []
    for host in hosts:
        for pub in sorted((host.root / "etc/ssh").glob("ssh_host_*_key.pub")):
            keytype, blob = pub.read_text().split()[:2]
            known.append(f"{host.address} {keytype} {blob}")
        config.append(
            f"Host {host.name} {host.address}\n  HostName {host.address}\n  User root\n  IdentityFile {key}\n"
            f"  IdentitiesOnly yes\n  UserKnownHostsFile {STATE / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
            "  ConnectTimeout 5\n  LogLevel ERROR\n"
        )
    (STATE / "known_hosts").write_text("\n".join(known) + "\n")
    (STATE / "ssh_config").write_text("\n".join(config))
    (STATE / "hosts.txt").write_text(",".join(f"ssh://{h.name}" for h in hosts) + "\n")
    (STATE / "inventory.py").write_text(inventory_text(hosts))


def inventory_text(hosts: list[LabHost]) -> str:
    """A pyinfra inventory of the lab, shaped like inventories/lab.py: the first host is the head."""
    def entry(host: LabHost) -> str:
        data = {
            "ssh_hostname": host.address, "ssh_user": "root", "ssh_key": str(STATE / "id_ed25519"),
            "ssh_known_hosts_file": str(STATE / "known_hosts"), "ssh_strict_host_key_checking": "yes",
            "rpc_bind_address": host.address,
        }
        return f"    ({host.name!r}, {data!r}),"
    lines = ['"""The running test lab (written by lab/lab.py; do not edit)."""', "", "rpc_workers = ["]
    lines += [entry(h) for h in hosts]
    lines += ["]", "", f"head = [{hosts[0].name!r}]", ""]
    return "\n".join(lines)


# --- start / stop -------------------------------------------------------------------------

def load_hosts() -> list[LabHost]:
    """The hosts of the running lab, from their host.json files."""
    hosts = []
    for path in sorted((STATE / "hosts").glob("*/host.json")):
        data = json.loads(path.read_text())
        data.pop("rootfs", None)
        hosts.append(LabHost(data["name"], data["address"], data["release"], GpuProfile(**data["gpu"])))
    return hosts


def start(hosts: list[LabHost]) -> list[LabHost]:
    """Boot the given hosts (stopping any running lab first) and write the client files."""
    check_names(hosts)
    for tool in ("systemd-nspawn", "debootstrap", "ip", "nft", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} is missing: run `bash scripts/setup` (as root) first")
    stop()
    lowers = {release: ensure_rootfs(release) for release in {h.release for h in hosts}}
    STATE.mkdir(parents=True, exist_ok=True)
    key = STATE / "id_ed25519"
    if not key.exists():
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "halo-lab", "-f", str(key))
    pubkey = (STATE / "id_ed25519.pub").read_text()
    ensure_bridge()
    try:
        for host in hosts:
            prepare_host(host, lowers[host.release], pubkey, hosts)
            plug_host(host)
            boot_host(host)
        write_client_files(hosts)
        wait_ready(hosts)
    except BaseException:
        stop()
        raise
    return hosts


def stop() -> None:
    """Power off every lab host and remove all it made: processes, mounts, links, namespaces."""
    hosts_dir = STATE / "hosts"
    dirs = sorted(p for p in hosts_dir.iterdir() if p.is_dir()) if hosts_dir.is_dir() else []
    pids, inits = {}, {}
    for d in dirs:
        host = LabHost(d.name, "")
        if is_alive(host):
            pids[d.name] = nspawn_pid(host)
            inits[d.name] = child_pids(pids[d.name])  # the container's systemd
            os.kill(pids[d.name], signal.SIGTERM)  # nspawn asks the container's systemd to power off
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for name, pid in pids.items():
        while not process_gone(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not process_gone(pid):
            for init in inits[name]:  # killing a container's init ends every process inside it
                try:
                    os.kill(init, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.killpg(pid, signal.SIGKILL)
            while not process_gone(pid):
                time.sleep(0.1)
    for d in dirs:  # a plain umount waits for the root file system to be written back
        if (d / "disk.device").is_file():
            run("umount", str(d / "root"), check=False)
    for mount in reversed(lab_mounts()):
        run("umount", "-l", mount, check=False)
    release_root_disks([(d / "disk.device").read_text() for d in dirs if (d / "disk.device").is_file()])
    for ns in lab_netns():
        run("ip", "netns", "del", ns, check=False)
    for link in lab_links():
        run("ip", "link", "del", link, check=False)
    run("nft", "delete", "table", "ip", NFT_TABLE, check=False)
    for d in dirs:
        release = json.loads((d / "host.json").read_text())["release"] if (d / "host.json").exists() else None
        if release:
            keep_apt_archives(d, release)
        shutil.rmtree(d)
    for name in ("inventory.py", "hosts.txt", "ssh_config", "known_hosts"):
        (STATE / name).unlink(missing_ok=True)


def lab_mounts() -> list[str]:
    """Mount points on this machine under the lab's state directory."""
    prefix = str(STATE) + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    return points


def lab_netns() -> list[str]:
    out = run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(NETNS_PREFIX)]


def lab_links() -> list[str]:
    out = run("ip", "-o", "link", "show", check=False).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
    return [n for n in names if n.startswith(VETH_PREFIX) or n == BRIDGE]


def lab_processes() -> list[str]:
    """Processes of this machine that belong to the lab (an nspawn or anything rooted in a lab host)."""
    found = []
    prefix = str(STATE / "hosts")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            root = os.readlink(proc / "root")
        except OSError:
            continue
        if root.startswith(prefix) or (cmd.startswith("systemd-nspawn") and prefix in cmd):
            found.append(f"{proc.name} {cmd.strip()}")
    return found


def lab_nft_tables() -> list[str]:
    out = run("nft", "list", "tables", check=False).stdout
    return [line for line in out.splitlines() if line.split()[-1:] == [NFT_TABLE]]


def leftovers() -> dict[str, list[str]]:
    """What a stopped lab must not leave: empty lists everywhere."""
    pending = STATE / "disks-pending"  # root devices a stop could not free in time: still attached?
    disks = [d for d in (pending.read_text().split() if pending.is_file() else [])
             if Path(f"/sys/block/{d.removeprefix('/dev/')}/loop").exists()
             or Path(f"/sys/block/{d.removeprefix('/dev/')}/initstate").is_file()]  # a zram device of an older lab
    return {"processes": lab_processes(), "mounts": lab_mounts(), "links": lab_links(), "netns": lab_netns(),
            "nft": lab_nft_tables(), "disks": disks}


def set_gpu(name: str, gpu: GpuProfile) -> None:
    """Give a running lab host other fake GPU values; visible inside it at once."""
    host = next((h for h in load_hosts() if h.name == name), None)
    if host is None:
        raise LabError(f"no lab host named {name!r} is running")
    write_fake_sysfs(host.root, gpu)
    host.gpu = gpu
    data = json.loads((host.dir / "host.json").read_text())
    (host.dir / "host.json").write_text(json.dumps({**data, "gpu": asdict(gpu)}, indent=1))


def running_host(name: str) -> LabHost:
    host = next((h for h in load_hosts() if h.name == name), None)
    if host is None:
        raise LabError(f"no lab host named {name!r} in this lab")
    return host


def kill_host(name: str) -> None:
    """Cut a lab host's power: SIGKILL its init (every process inside dies at once) and its nspawn.

    Its root file system stays mounted here, so whatever it had written survives, as on a disk.
    """
    host = running_host(name)
    pid = nspawn_pid(host)
    if not is_alive(host):
        return
    for init in child_pids(pid):
        os.kill(init, signal.SIGKILL)
    os.killpg(pid, signal.SIGKILL)
    while not process_gone(pid):
        time.sleep(0.1)


def restart_host(name: str) -> LabHost:
    """Boot a lab host again with the state it had (killed or not): its disk, network and keys are kept."""
    host = running_host(name)
    kill_host(name)
    boot_host(host)
    wait_ready([host])
    return host


def ensure(hosts: list[LabHost]) -> list[LabHost]:
    """The running lab when it has exactly these hosts (names, releases) alive; else start them."""
    running = load_hosts()
    if [(h.name, h.release) for h in running] == [(h.name, h.release) for h in hosts] and all(
        is_alive(h) for h in running
    ):
        return running
    return start(hosts)
