"""Rules across the variables of one host: each returns (variable, what is wrong and what is expected).

Settings runs host_problems() when it validates; the error names the host, the variable and its value.

    >>> risky_kernel_arg("nomodeset")
    'amdgpu does not load without kernel mode setting: no GPU for llama.cpp'
"""

from __future__ import annotations

import ipaddress
import posixpath
from collections.abc import Callable
from typing import TYPE_CHECKING

from packaging.version import Version

from deploys.settings.fields import HEAD_MANAGED_ENV, RPC_MANAGED_ENV

if TYPE_CHECKING:
    from deploys.settings.model import Settings


def host_problems(s: Settings) -> list[tuple[str, str]]:
    """Every rule of this module over one host's values."""
    issues: list[tuple[str, str]] = []
    if Version(s.kernel_recommended_version) < Version(s.kernel_min_version):
        issues.append(
            (
                "kernel_recommended_version",
                f"it is older than kernel_min_version = {s.kernel_min_version!r}; "
                "expected a version at least kernel_min_version",
            )
        )
    address = s.rpc_bind_address
    if address is not None and not s.rpc_allow_any_address:
        if address.is_unspecified or address.is_global:
            kind = "every interface" if address.is_unspecified else "a public address"
            issues.append(
                (
                    "rpc_bind_address",
                    f"it listens on {kind}, and the llama.cpp RPC server has no "
                    "authentication (anyone who reaches it can run code on the GPU); "
                    "expected a private cluster-link address such as '10.151.0.12', "
                    "or set rpc_allow_any_address = True to accept the risk",
                )
            )
    for variable in ("rpc_bind_address", "head_bind_address"):
        value = getattr(s, variable)
        if isinstance(value, ipaddress.IPv6Address) and value.is_link_local and not value.scope_id:
            issues.append(
                (
                    variable,
                    "a link-local IPv6 address means something only on one interface; expected it with "
                    f"its interface, such as '{value}%eth1', or the link's IPv4 address",
                )
            )
    issues.extend(_path_problems(s))
    ports = [instance.port for instance in s.rpc_instances]
    for port in sorted({p for p in ports if ports.count(p) > 1}):
        issues.append(
            ("rpc_instances", f"port {port} is used by {ports.count(port)} instances; expected each on its own port")
        )
    issues.extend(("kernel_extra_args", d) for d in _kernel_extra_args_problems(s))
    issues.extend(_env_problems(s))
    if s.rocm_source == "therock":
        needs = {
            "rocm_tarball_url": "the http:// or https:// URL of the TheRock tarball to install",
            "rocm_tarball_sha256": "the tarball's sha256 (64 hex digits), checked before it is unpacked",
        }
        for variable, expected in needs.items():
            if getattr(s, variable) is None:
                issues.append((variable, f"rocm_source is 'therock'; expected {expected}"))
    for arg in s.llama_cpp_cmake_extra_args:
        if arg.startswith("-DGGML_RPC_RDMA"):
            issues.append(("llama_cpp_cmake_extra_args", f"{arg!r} is set from llama_cpp_rpc_rdma; expected no "
                           "GGML_RPC_RDMA here (set llama_cpp_rpc_rdma = True instead)"))
    issues.extend(_model_problems(s))
    issues.extend(_serving_problems(s))
    return issues


# Where the hardened units cannot see a path: (directory, why). halo-rpc@ has ProtectHome=yes (homes
# are empty there); every unit has PrivateTmp=yes (its own empty /tmp and /var/tmp); /root and
# /run/user/<uid> are readable by their owner only, not by the service users. llama-server's unit
# mounts /home read-only on purpose when the model lives there, so model paths may be under /home.
_HIDDEN_DIRS = {
    "/home": "halo-rpc@'s ProtectHome=yes hides every home directory from the RPC servers",
    "/root": "/root is readable by root only, and the services run as unprivileged users",
    "/run/user": "/run/user/<uid> is readable by its owner only, and the services run as unprivileged users",
    "/tmp": "the units' PrivateTmp=yes gives each service its own empty /tmp",
    "/var/tmp": "the units' PrivateTmp=yes gives each service its own empty /var/tmp",
}
_PATH_VARIABLES = {  # variable: the directories its services cannot see
    "llama_cpp_prefix": ("/home", "/root", "/run/user", "/tmp", "/var/tmp"),
    "model_path": ("/root", "/run/user", "/tmp", "/var/tmp"),
    "model_dir": ("/root", "/run/user", "/tmp", "/var/tmp"),
}
_SUGGESTED_PATH = {
    "llama_cpp_prefix": "/opt/llama.cpp",
    "model_path": "/srv/models/<file>.gguf",
    "model_dir": "/var/lib/halo-provision/models",
}


def _path_problems(s: Settings) -> list[tuple[str, str]]:
    """Paths under a directory the hardened units cannot see (or '..' that leads there)."""
    problems = []
    for variable, hidden in _PATH_VARIABLES.items():
        value = getattr(s, variable)
        if value is None:
            continue
        path = posixpath.normpath(value)
        for directory in hidden:
            if path == directory or path.startswith(directory + "/"):
                problems.append(
                    (
                        variable,
                        f"{_HIDDEN_DIRS[directory]}, so they could not read it; expected a path outside "
                        f"{', '.join(hidden)}, such as {_SUGGESTED_PATH[variable]!r}",
                    )
                )
                break
    return problems


def _model_problems(s: Settings) -> list[tuple[str, str]]:
    """model_url needs model_sha256 and excludes model_path; a tensor split needs a non-zero entry."""
    problems = []
    if s.model_url is not None and s.model_path is not None:
        problems.append(("model_url", "model_path is set too; expected one of them (None for the other)"))
    if s.model_url is not None and s.model_sha256 is None:
        problems.append(("model_sha256", "model_url is set; expected the file's sha256 (64 hex digits), "
                         "checked before llama-server uses the download"))
    if s.model_sha256 is not None and s.model_url is None:
        problems.append(("model_sha256", "it checks downloads only, and model_url is None; expected None, "
                         "or set model_url"))
    if s.model_files:
        from deploys.models import split_problems

        others = [v for v in ("model_path", "model_url") if getattr(s, v) is not None]
        if others:
            problems.append(("model_files", f"{' and '.join(others)} is set too; expected one way to name the model "
                             "(None for the others)"))
        problems.extend(("model_files", d) for d in split_problems([f.url or f.hf for f in s.model_files]))
    if s.head_tensor_split is not None and not any(s.head_tensor_split):
        problems.append(("head_tensor_split", "every entry is 0; " + type(s).model_fields["head_tensor_split"].json_schema_extra["valid"]))
    return problems


# Kernel arguments that take a host off the network (no sshd, renamed or missing interfaces) or the
# GPU off the bus (no amdgpu, no KMS, a GTT size that fights ttm.pages_limit): refused unless
# kernel_allow_risky_args. Keys are compared with '-' as '_'; (key, value test or None, why).
_RISKY_KERNEL_ARGS: tuple[tuple[str, Callable[[str], bool] | None, str], ...] = (
    ("init", None, "it replaces systemd as PID 1, so no sshd and no service of ours starts"),
    ("rdinit", None, "it replaces the initramfs' init, so the host may never reach its root file system"),
    ("systemd.unit", None, "it boots into another target (rescue, emergency): no network, no sshd"),
    ("single", None, "it boots into rescue mode: no network, no sshd"),
    ("emergency", None, "it boots into emergency mode: no network, no sshd"),
    ("rescue", None, "it boots into rescue mode: no network, no sshd"),
    ("s", None, "it boots into rescue mode: no network, no sshd"),
    ("rd.break", None, "it stops the boot in the initramfs shell"),
    ("nomodeset", None, "amdgpu does not load without kernel mode setting: no GPU for llama.cpp"),
    ("amdgpu.modeset", lambda v: v in ("0", "-1"), "it keeps amdgpu from loading: no GPU for llama.cpp"),
    ("amdgpu.gttsize", None, "it is deprecated and fights ttm.pages_limit (set from ttm_gib) over the GTT size"),
    ("modprobe.blacklist", lambda v: "amdgpu" in v.split(","), "it keeps amdgpu from loading: no GPU"),
    ("module_blacklist", lambda v: "amdgpu" in v.split(","), "it keeps amdgpu from loading: no GPU"),
    ("rd.driver.blacklist", lambda v: "amdgpu" in v.split(","), "it keeps amdgpu from loading: no GPU"),
    ("net.ifnames", None, "it renames the network interfaces, so their configuration no longer matches: "
                          "the host may come up off the network"),
    ("biosdevname", None, "it renames the network interfaces: the host may come up off the network"),
    ("ip", None, "it configures the network in the initramfs, over the host's own configuration"),
    ("ipv6.disable", None, "it removes IPv6: an IPv6 cluster link or SSH address goes away"),
    ("mem", None, "it hides RAM from the kernel, and ttm_gib counts the installed RAM"),
    ("maxcpus", lambda v: v == "0", "it boots with one CPU"),
    ("nosmp", None, "it boots with one CPU"),
    ("panic", lambda v: v.lstrip("-").isdigit() and int(v) < 0, "it reboots at once on a panic, over and over"),
)


def risky_kernel_arg(arg: str) -> str | None:
    """Why `arg` may take the host off the network or the GPU off the bus, else None."""
    key, _, value = arg.partition("=")
    key = key.replace("-", "_")
    for risky, test, why in _RISKY_KERNEL_ARGS:
        if key == risky.replace("-", "_") and (test is None or test(value)):
            return why
    return None


def _serving_problems(s: Settings) -> list[tuple[str, str]]:
    """ubatch within batch; extra arguments start with an option and leave our settings to their variables."""
    from deploys.serving import extra_args_problems  # the flags each variable sets live there

    problems = []
    if s.head_ubatch_size is not None and s.head_batch_size is not None and s.head_ubatch_size > s.head_batch_size:
        problems.append(("head_ubatch_size", f"it is larger than head_batch_size = {s.head_batch_size}; expected "
                         "at most head_batch_size (llama.cpp caps it there anyway)"))
    problems.extend(("head_extra_args", detail) for detail in extra_args_problems(s.head_extra_args))
    if s.head_rpc_servers == "auto" and s.head_tensor_split is not None:
        problems.append(("head_rpc_servers", "head_tensor_split is set, and its proportions name every device; "
                         "expected 'all' with head_tensor_split, or head_tensor_split = None"))
    return problems


def _env_problems(s: Settings) -> list[tuple[str, str]]:
    """rpc_env, the instances' env and head_env must not set what the steps set themselves."""
    def managed(env: dict[str, str], ours: dict[str, str], where: str) -> list[str]:
        return [f"{name} is set by halo-provision{where} from {ours[name]}; expected no {name} here"
                + ("" if ours[name].startswith("nothing") else f" (set {ours[name].split(' (')[0]} instead)")
                for name in env if name in ours]

    problems = [("rpc_env", d) for d in managed(s.rpc_env, RPC_MANAGED_ENV, " in halo-rpc@ units")]
    for instance in s.rpc_instances:
        problems += [("rpc_instances", d) for d in managed(instance.env, RPC_MANAGED_ENV,
                                                            f" in halo-rpc@{instance.port}")]
    problems += [("head_env", d) for d in managed(s.head_env, HEAD_MANAGED_ENV, " in llama-server's settings")]
    problems += [("head_env", f"{name} is one of llama-server's flags, and halo-provision writes those from "
                  f"the head_* variables; expected no LLAMA_ARG_* here (set the head_* variable of that flag)")
                 for name in s.head_env if name.startswith("LLAMA_ARG_") and name not in HEAD_MANAGED_ENV]
    return problems


def _kernel_extra_args_problems(s: Settings) -> list[str]:
    """kernel_extra_args must not repeat a key, set what ttm_gib / iommu_mode manage, or take the host off
    the network or the GPU off the bus (unless kernel_allow_risky_args)."""
    problems, seen = [], set()
    for arg in s.kernel_extra_args:
        why = risky_kernel_arg(arg)
        if why is not None and not s.kernel_allow_risky_args:
            problems.append(
                f"{arg!r} may take the host off the network or the GPU off the bus: {why}; expected no {arg} "
                "here, or set kernel_allow_risky_args = True if you mean it"
            )
        key = arg.partition("=")[0].replace("-", "_")
        if key in seen:
            problems.append(f"{key} appears twice; expected each key once")
        seen.add(key)
        if key.endswith((".pages_limit", ".page_pool_size")) and key.split(".")[0] in ("ttm", "amdttm"):
            problems.append(f"{arg!r} is set from ttm_gib; expected no {key} here (set ttm_gib instead)")
        elif key in ("iommu", "amd_iommu") and s.iommu_mode != "keep":
            problems.append(
                f"{arg!r} conflicts with iommu_mode = {s.iommu_mode!r}; expected no {key} here, "
                "or iommu_mode = 'keep'"
            )
    return problems



def service_port_problems(s: Settings) -> list[str]:
    """Ports of ours that sshd uses on the host (ssh_port, default 22): the firewall and the server would
    take it. (Ports below 1024 are refused by the field types; head_port vs the RPC ports: cross-host.)"""
    problems = []
    try:
        ssh_port = int(s._ssh_port)
    except (TypeError, ValueError):
        return problems
    if s.is_rpc_worker:
        for server in s.rpc_servers:
            if server.port == ssh_port:
                variable = "rpc_instances" if s.rpc_instances else "rpc_port"
                problems.append(s._problem(
                    variable, f"sshd listens on port {ssh_port} of {s.host_name} (ssh_port), and the RPC "
                    "server and its firewall rule would take that port; expected a port no other service of "
                    f"{s.host_name} uses, such as 50052"))
    if s.is_head and s.head_port == ssh_port:
        problems.append(s._problem(
            "head_port", f"sshd listens on port {ssh_port} of {s.host_name} (ssh_port); expected a port no other "
            f"service of {s.host_name} uses, such as 8080"))
    return problems

