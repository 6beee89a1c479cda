"""What deploys/full.py leaves on the lab cluster: every file our steps write, its owner and mode.

Our files are root's and writable by root only (a unit, env file or binary another user could write
is a way to root); llama-server's settings are root-only; the RPC server's tensor cache belongs to
its own user and nobody else. The hardening of the units is measured with `systemd-analyze
security` (the RPC unit's in test_rpc_worker.py, llama-server's here).
"""

from __future__ import annotations

import re

from lab import lab

HEAD = "halo1"
# Everything the steps write: GRUB, ROCm's apt files (amd-repo), units, env and firewall files,
# the model, the RPC cache, the llama.cpp trees and builds (the lab's own halo-lab-* units are not ours).
LIST_FILES = r"""shopt -s nullglob
find /etc/default/grub /etc/default/grub.halo-provision-*.bak /boot/grub/grub.cfg \
     /etc/apt/keyrings/*rocm* /etc/apt/sources.list.d/*rocm* /etc/apt/preferences.d/*rocm* \
     /etc/halo-provision /var/lib/halo-provision /var/lib/halo-rpc /var/cache/halo-rpc \
     /var/cache/halo-llama-server /opt/llama.cpp /opt/rocm* /usr/local/libexec/halo-provision \
     $(find /etc/systemd/system -name 'halo-*' ! -name 'halo-lab-*') \
     -xdev -printf '%y %u %g %m %p\n' 2>/dev/null | sort -k5; true"""
EXPECTED = {  # path: (owner, mode) on the hosts that have it
    "/etc/default/grub": ("root", "644"),
    "/etc/halo-provision": ("root", "755"),
    "/etc/halo-provision/llama-server.env": ("root", "600"),  # the head's settings: root-only
    "/etc/halo-provision/rpc-50052.env": ("root", "600"),  # address, port, build id, rpc_env (may be secret)
    "/etc/halo-provision/firewall.nft": ("root", "644"),
    "/etc/systemd/system/halo-rpc@.service": ("root", "644"),
    "/etc/systemd/system/halo-firewall.service": ("root", "644"),
    "/etc/systemd/system/halo-llama-server.service": ("root", "644"),
    "/usr/local/libexec/halo-provision/wait-rpc-servers": ("root", "755"),  # run by the head's unit
    "/var/lib/halo-provision/models": ("root", "755"),
    "/var/lib/halo-rpc": ("llama-rpc", "750"),
    "/var/lib/halo-rpc/rpc": ("llama-rpc", "700"),
    "/var/cache/halo-rpc": ("llama-rpc", "750"),  # Mesa's shader cache (CacheDirectory=)
    "/var/cache/halo-llama-server": ("llama-server", "750"),
    "/opt/llama.cpp": ("root", "755"),
}
SERVICE_OWNED = {"/var/lib/halo-rpc": "llama-rpc", "/var/cache/halo-rpc": "llama-rpc",
                 "/var/cache/halo-llama-server": "llama-server"}  # a service's own state: its user's, closed to others


def written_files(name: str) -> dict[str, tuple[str, str, str, str]]:
    """{path: (type f/d/l, owner, group, octal mode)} of what our steps wrote on a host."""
    found = {}
    for line in lab.ssh(name, LIST_FILES, timeout=120).stdout.splitlines():
        kind, owner, group, mode, path = line.split(" ", 4)
        found[path] = (kind, owner, group, mode)
    return found


def problems(files: dict[str, tuple[str, str, str, str]]) -> list[str]:
    """Entries not root's (or their service's), writable by group or others, or readable by others
    where a service owns them."""
    found = []
    for path, (kind, owner, group, mode) in files.items():
        service = next((user for top, user in SERVICE_OWNED.items() if path == top or path.startswith(top + "/")),
                       None)
        if owner != (service or "root"):
            found.append(f"{path} is owned by {owner}, expected {service or 'root'}")
        if kind != "l" and int(mode, 8) & 0o022:
            found.append(f"{path} has mode {mode}: writable by group or others")
        if service and int(mode, 8) & 0o007:
            found.append(f"{path} has mode {mode}: open to others")
    return found


def test_every_file_the_steps_wrote_is_root_s_and_secrets_are_root_only(cluster):
    names = [h.name for h in cluster.hosts]
    listed = {name: written_files(name) for name in names}
    for name, files in listed.items():
        print(f"{name}: {len(files)} files and directories written by the steps")
        assert not problems(files), "\n".join([f"{name}:"] + problems(files))
        for path, (owner, mode) in EXPECTED.items():
            if path in files:
                _, has_owner, _, has_mode = files[path]
                assert (has_owner, has_mode) == (owner, mode), f"{name}: {path} is {has_owner} {has_mode}, expected {owner} {mode}"
        # every host: GRUB edited with a backup, the build, an RPC server with its firewall
        assert [p for p in files if p.startswith("/etc/default/grub.halo-provision-")], name
        for path in ("/etc/default/grub", "/opt/llama.cpp/current", "/etc/systemd/system/halo-rpc@.service",
                     "/etc/halo-provision/rpc-50052.env", "/etc/halo-provision/firewall.nft", "/var/lib/halo-rpc/rpc"):
            assert path in files, f"{name}: {path} is missing"
    head = listed[HEAD]
    for path in ("/etc/halo-provision/llama-server.env", "/etc/systemd/system/halo-llama-server.service"):
        assert path in head, f"{HEAD}: {path} is missing"
    model = next(p for p in head if p.startswith("/var/lib/halo-provision/models/") and p.endswith(".gguf"))
    assert head[model][1] == "root" and head[model][3] == "644"
    assert all("/etc/halo-provision/llama-server.env" not in files for name, files in listed.items() if name != HEAD)


def test_systemd_rates_llama_server_ok_or_better(cluster):
    unit = "halo-llama-server.service"
    verdict = lab.ssh(HEAD, f"systemd-analyze security --no-pager {unit} | tail -n 1").stdout
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", verdict)
    assert match, verdict
    print(f"systemd-analyze security {unit}: {match[1]} {match[2]}")
    assert match[2] in ("SAFE", "OK"), verdict
