"""Validated host settings of halo-provision.

Every variable a deploy reads comes from pyinfra host data (the inventory's
host data, ``group_data/<group>.py``, ``group_data/all.py`` or ``--data``).
This module checks all of them, for all hosts, once per pyinfra run, before
any operation is added, and gives deploys a typed view::

    from deploys.settings import settings
    s = settings(host)          # raises SettingsError naming host, variable, value, fix
    s.rpc_port, s.rpc_bind_address, s.ttm_pages(installed_ram_bytes)

The defaults here are the same as in ``group_data/all.py`` (a test keeps them,
the Settings fields and the README table in step).
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import json
import posixpath
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from packaging.version import InvalidVersion, Version
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pyinfra import logger
from pyinfra.api.exceptions import PyinfraError

if TYPE_CHECKING:
    from pyinfra.api import Host, Inventory

__all__ = [
    "GIB",
    "HEAD_GROUP",
    "PREFIXES",
    "RPC_WORKERS_GROUP",
    "HEAD_MANAGED_ENV",
    "RPC_MANAGED_ENV",
    "RpcInstance",
    "TTM_PAGES_PER_GIB",
    "VARIABLES",
    "Settings",
    "SettingsError",
    "inventory_warnings",
    "masked",
    "settings",
    "validate_inventory",
]

GIB = 1024**3
# ttm.pages_limit counts 4 KiB pages: 1 GiB = 262144 pages.
TTM_PAGES_PER_GIB = GIB // 4096

HEAD_GROUP = "head"
RPC_WORKERS_GROUP = "rpc_workers"

# Host data keys starting with one of these belong to halo-provision: a key with
# such a prefix that is not a Settings field is a typo and an error.
PREFIXES = (
    "llama_cpp_",
    "kernel_",
    "firmware_",
    "ttm_",
    "os_reserve",
    "vram_",
    "iommu_",
    "reboot_",
    "gpu_",
    "rocm_",
    "rpc_",
    "head_",
    "model_",
)

DEFAULT_FIX = "the inventory's host data or group_data/all.py"
# Variables that are gone: name -> what replaced it and why (the error a host with one of them gets).
RETIRED = {
    "firmware_min_date": (
        "it was replaced by firmware_bad_snapshots, a list of known-bad linux-firmware snapshots "
        "(default [20251125]): a minimum date rejected 20251111, the rollback AMD engineers advise after the "
        "20251125 regression, and the loaded MES version is checked wherever debugfs is readable"
    ),
}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class SettingsError(PyinfraError):
    """Invalid halo-provision host data; the message lists every problem, one per line."""

    def __init__(self, problems: list[str] | str):
        if isinstance(problems, str):
            problems = [problems]
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))


# ---------------------------------------------------------------------------
# Field types
# ---------------------------------------------------------------------------

_KERNEL_VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+(\.[0-9]+)?$")
_OEM_KERNEL_VERSION_RE = r"^[0-9]+\.[0-9]+\.[0-9]+-[0-9]+$"
_GPU_TARGET_RE = r"^gfx[0-9]{3,4}[0-9a-f]?$"
_USER_NAME_RE = r"^[a-z_][a-z0-9_-]{0,31}$"
# A kernel argument: "key=value" or a flag; nothing that needs quoting in /etc/default/grub or a shell.
_KERNEL_ARG_RE = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(=[A-Za-z0-9_.,:/@%+=~*-]*)?$"
# Printable, no spaces: values that reach a host's commands (as quoted data) or a build stamp.
_GIT_URL_RE = r"^((https?|git|ssh|file)://[!-~]+|/[!-~]*)$"
_GIT_REF_RE = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$"
_ABS_PATH_RE = r"^/[A-Za-z0-9._/-]*$"
_CMAKE_ARG_RE = r"^-D[A-Za-z_][A-Za-z0-9_]*(:[A-Z]+)?=[!-~]*$"


def _check_kernel_version(value: str) -> str:
    if not _KERNEL_VERSION_RE.match(value):
        raise ValueError("not a kernel version")
    try:
        Version(value)
    except InvalidVersion as e:  # pragma: no cover - the regex already guarantees it
        raise ValueError(str(e)) from e
    return value


def _check_git_url(value: str) -> str:
    # The pattern already refuses "-..." (git would read an option) and "<transport>::<address>"
    # (ext::, fd::: remote helpers that run commands). A URL's host starting with "-" would become
    # an option of ssh.
    host = value.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1] if "://" in value else ""
    if host.startswith("-"):
        raise ValueError("its host starts with '-', which ssh would read as an option")
    return value


def _check_git_ref(value: str) -> str:
    if ".." in value or value.endswith((".lock", "/", ".")):
        raise ValueError("not a git ref")
    return value


def _check_date(value: int) -> int:
    try:
        day = datetime.datetime.strptime(str(value), "%Y%m%d").date()
    except ValueError as e:
        raise ValueError("not a date YYYYMMDD") from e
    if not 2000 <= day.year <= 2100:
        raise ValueError("year out of range")
    return value


_ROCM_VERSION_RE = r"^[0-9]+\.[0-9]+(\.[0-9]+)?$"
_HTTP_URL_RE = r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[^\s'\"]*)?$"
_SHA256_RE = r"^[0-9A-Fa-f]{64}$"
_PACKAGE_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9+._-]*$"
# llama-server values that reach its environment file or command line: nothing a file or systemd reads
# specially (spaces, quotes, $, %, ...); a tensor override keeps regex backslashes (its value is quoted).
_ALIAS_RE = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"
# A file of a Hugging Face repository: owner/repo/path (no '..', no URL characters).
_HF_FILE_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*/([A-Za-z0-9][A-Za-z0-9._-]*/)*[A-Za-z0-9][A-Za-z0-9._-]*\.gguf$"
_OVERRIDE_TENSOR_RE = r"^[^\s'\",=$%;&<>`#]+=[A-Za-z0-9_.:\[\]-]+$"
_EXTRA_ARG_RE = r"^[^\s'\"\\$%;&<>`#]+$"


def _check_fingerprint(value: str) -> str:
    if len(value) != 40:
        raise ValueError("not 40 hex digits")
    return value


def _check_not_dkms(value: str) -> str:
    # amdgpu-dkms-firmware has shipped the MES 0x83 that hangs gfx1151; the in-kernel driver is enough.
    if value.lower().startswith("amdgpu-dkms"):
        raise ValueError("amdgpu-dkms is never installed")
    return value


def _address_input(value: Any) -> Any:
    # pydantic would also turn ints and bytes into addresses: only accept text.
    if value is None or isinstance(value, (str, ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    raise ValueError("not an address string")


def _unmapped(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address ('::ffff:10.151.0.12') as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _unscoped(address: IPAddress) -> IPAddress:
    """`address` without an IPv6 scope ('fe80::12%eth1' -> 'fe80::12'): the same address on the link."""
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return ipaddress.IPv6Address(str(address).partition("%")[0])
    return address


def _check_bindable(value: IPAddress | None) -> IPAddress | None:
    if value is not None and value.is_multicast:
        raise ValueError("multicast address")
    # '::ffff:10.151.0.12' is 10.151.0.12: judged (private? a duplicate?) and used as IPv4
    return None if value is None else _unmapped(value)


KernelVersion = Annotated[str, Strict(), AfterValidator(_check_kernel_version)]
OemKernelVersion = Annotated[str, Strict(), StringConstraints(pattern=_OEM_KERNEL_VERSION_RE)]
GiB = Annotated[int, Strict()]
Port = Annotated[int, Strict(), Field(ge=1, le=65535)]
# The RPC server runs unprivileged: it cannot bind a port below 1024, where sshd and other system services live.
RpcPort = Annotated[int, Strict(), Field(ge=1024, le=65535)]
BindAddress = Annotated[
    IPAddress | None, BeforeValidator(_address_input), AfterValidator(_check_bindable)
]
GpuTarget = Annotated[str, Strict(), StringConstraints(pattern=_GPU_TARGET_RE)]
UserName = Annotated[str, Strict(), StringConstraints(pattern=_USER_NAME_RE)]
HttpUrl = Annotated[str, Strict(), StringConstraints(pattern=_HTTP_URL_RE)]
# ggml device names for `ggml-rpc-server -d`, e.g. "ROCm0" or "Vulkan0,Vulkan1".
DeviceList = Annotated[str, Strict(), StringConstraints(pattern=r"^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$")]
# Environment of a service: POSIX names; values without newlines, NULs or other control characters
# (tab allowed), so one quoted line of a systemd EnvironmentFile holds each (deploys/common.py).
EnvName = Annotated[str, Strict(), StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
EnvValue = Annotated[str, Strict(), StringConstraints(pattern=r"^[^\x00-\x08\x0a-\x1f\x7f]{0,4096}$")]
EnvVars = dict[EnvName, EnvValue]

# Environment variables the steps set themselves, with the variable that sets each: refused in
# rpc_env / rpc_instances env (halo-rpc@.service, rpc-<port>.env) and head_env (llama-server.env).
# head_env refuses every other LLAMA_ARG_* too: llama-server's flags come from the head_* variables.
RPC_MANAGED_ENV = {
    "RPC_HOST": "rpc_bind_address",
    "RPC_PORT": "rpc_port or the instance's port",
    "RPC_DEVICE_ARGS": "the instance's device",
    "RPC_THREADS_ARGS": "the instance's threads",
    "LLAMA_BUILD_ID": "llama_cpp_ref (the build's id)",
    "LLAMA_CACHE": "nothing (the unit keeps the tensor cache in its state directory)",
    "MESA_SHADER_CACHE_DIR": "nothing (the unit gives Mesa its cache directory)",
}
HEAD_MANAGED_ENV = {
    "LLAMA_ARG_MODEL": "model_path or model_url",
    "LLAMA_ARG_HOST": "head_bind_address",
    "LLAMA_ARG_PORT": "head_port",
    "LLAMA_ARG_N_GPU_LAYERS": "head_gpu_layers",
    "LLAMA_ARG_FLASH_ATTN": "head_flash_attn",
    "LLAMA_ARG_CTX_SIZE": "head_ctx_size",
    "LLAMA_ARG_N_PARALLEL": "head_parallel",
    "LLAMA_ARG_CACHE_TYPE_K": "head_cache_type_k",
    "LLAMA_ARG_CACHE_TYPE_V": "head_cache_type_v",
    "LLAMA_ARG_LOG_VERBOSITY": "head_log_verbosity",
    "LLAMA_ARG_ENDPOINT_METRICS": "head_metrics",
    "LLAMA_ARG_RPC": "the rpc_workers group (the --rpc list)",
    "LLAMA_ARG_TENSOR_SPLIT": "head_tensor_split",
    "LLAMA_ARG_LOAD_MODE": "nothing (the step probes the build's load mode)",
    "LLAMA_ARG_DIO": "nothing (the step probes the build's load mode)",
    "LLAMA_ARG_API_KEY": "head_api_key_file (a key belongs in no environment)",
    "LLAMA_ARG_API_KEY_FILE": "head_api_key_file",
    "MESA_SHADER_CACHE_DIR": "nothing (the unit gives Mesa its cache directory)",
    "HALO_LLAMA_SERVER_ARGS": "head_extra_args and the head_* variables without an LLAMA_ARG_* twin",
}


# llama-server's KV cache types (-ctk/-ctv), as its --help lists them.
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
KvCacheType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]
AbsPath = Annotated[str, Strict(), StringConstraints(pattern=_ABS_PATH_RE)]
Sha256 = Annotated[str, Strict(), StringConstraints(pattern=_SHA256_RE), AfterValidator(str.lower)]


class ModelFile(BaseModel):
    """One file of a (split) model to download: its URL, or its Hugging Face repository and path
    (`hf`: 'owner/repo/path/in/repo.gguf', fetched from model_hf_endpoint), and its sha256."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpUrl | None = None
    hf: Annotated[str, Strict(), StringConstraints(pattern=_HF_FILE_RE)] | None = None
    sha256: Sha256

    @model_validator(mode="after")
    def _one_source(self) -> ModelFile:
        if (self.url is None) == (self.hf is None):
            raise ValueError("give exactly one of url and hf")
        return self


class RpcInstance(BaseModel):
    """One llama.cpp RPC server of a worker (unit halo-rpc@<port>); device and threads are optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    port: RpcPort
    device: DeviceList | None = None
    threads: Annotated[int, Strict(), Field(ge=1, le=1024)] | None = None
    # the one head that uses this server (an RPC server serves one client at a time); None: every head
    head: Annotated[str, Strict(), StringConstraints(min_length=1)] | None = None
    env: EnvVars = {}  # over rpc_env, for this instance only


# What is valid, per variable: the tail of "... is invalid: expected <this>."
VALID: dict[str, str] = {
    "kernel_min_version": "a kernel version such as '6.16.9' (two or three numbers separated by dots)",
    "kernel_recommended_version": (
        "a kernel version such as '6.18.4' (two or three numbers separated by dots), "
        "not older than kernel_min_version"
    ),
    "kernel_oem_min_version": (
        "an Ubuntu kernel version and ABI number such as '6.14.0-1018' (three numbers separated by dots, "
        "'-', the ABI number of the OEM kernel release)"
    ),
    "firmware_bad_snapshots": (
        "a list of linux-firmware snapshot dates known to be bad, as whole numbers YYYYMMDD, e.g. [20251125]"
    ),
    "ttm_gib": "a whole number of GiB from 1 to 1024, or None for installed RAM minus os_reserve_gib",
    "os_reserve_gib": "a whole number of GiB from 1 to 64",
    "vram_carveout_max_gib": "a whole number of GiB from 0 to 128",
    "iommu_mode": "one of 'off' (amd_iommu=off), 'pt' (iommu=pt) or 'keep' (leave the kernel command line as is)",
    "kernel_extra_args": (
        "a list of kernel arguments such as ['amdgpu.cwsr_enable=0', 'nowatchdog'] ('key=value' or a flag; "
        "no spaces, quotes or shell characters)"
    ),
    "kernel_allow_risky_args": (
        "True (set kernel_extra_args that may take the host off the network or the GPU off the bus, "
        "such as nomodeset or init=, on purpose) or False"
    ),
    "reboot_allowed": "True (reboot a host whose running kernel lacks the arguments) or False (report it)",
    "reboot_timeout_s": "a whole number of seconds from 60 to 7200",
    "gpu_targets": (
        "a non-empty list of AMD GPU targets such as ['gfx1151'] "
        "('gfx' followed by 3 or 4 digits and an optional hex digit)"
    ),
    "gpu_users": (
        "a list of Linux user names such as ['alice'] (a lowercase letter or '_' first, "
        "then lowercase letters, digits, '_' or '-', at most 32 characters)"
    ),
    "rpc_port": (
        "a TCP port number from 1024 to 65535 that no other service of the host uses, such as 50052 "
        "(the unprivileged RPC server cannot bind a lower one)"
    ),
    "rpc_bind_address": (
        "the IPv4 or IPv6 address (not a host name) of this worker's cluster-link interface, "
        "e.g. '10.151.0.12', or None on hosts that are not in group rpc_workers"
    ),
    "rpc_allow_any_address": "True or False",
    "rpc_instances": (
        "a list of RPC servers such as [{'port': 50052, 'device': 'ROCm0', 'threads': 8}] "
        "(port 1024 to 65535, each port once; optional device: ggml device names separated by commas; "
        "optional threads 1 to 1024; optional head: the name of the one head that uses this server; "
        "optional env: a dict like rpc_env, over it for this instance), or [] for one server on rpc_port"
    ),
    "rpc_cache_max_mib": (
        "a whole number of MiB from 0 (no tensor cache) to 16777216, or None for a tenth of the file "
        "system that holds /var/lib/halo-rpc"
    ),
    "rpc_env": (
        "a dict of environment variables for the RPC servers, such as {'GGML_VK_VISIBLE_DEVICES': '0'} "
        "(names: a letter or '_' first, then letters, digits or '_'; values: strings without newlines, "
        "NULs or other control characters, at most 4096 characters)"
    ),
    "llama_cpp_repo": (
        "a git repository URL (https://, http://, git://, ssh://, file://) or an absolute path, "
        "e.g. 'https://github.com/ggml-org/llama.cpp' (printable characters, no spaces; not an option "
        "such as '-u...', no remote helper such as 'ext::', no host starting with '-')"
    ),
    "llama_cpp_ref": "a release tag such as 'b10760' or a commit hash (7 to 40 hex digits)",
    "llama_cpp_backend": "one of 'hip' (ROCm), 'vulkan' or 'cpu'",
    "llama_cpp_prefix": "an absolute directory path such as '/opt/llama.cpp'",
    "llama_cpp_build_once": "True (build on one host per distro and backend, copy to the others) or False",
    "llama_cpp_cmake_extra_args": (
        "a list of CMake cache settings such as ['-DGGML_HIP_NO_VMM=ON'] ('-D<NAME>=<value>', printable "
        "characters, no spaces; GGML_RPC_RDMA comes from llama_cpp_rpc_rdma)"
    ),
    "llama_cpp_rpc_rdma": (
        "True (build the RPC backend's RDMA transport: every host then needs libibverbs) or False"
    ),
    "llama_cpp_build_jobs": "a whole number of parallel compile jobs from 1 to 256, or None for all cores",
    "rocm_source": (
        "one of 'distro' (Fedora's or Debian testing's own packages), 'amd-repo' (AMD's apt repository, "
        "Ubuntu and Debian) or 'therock' (a TheRock tarball from rocm_tarball_url)"
    ),
    "rocm_version": "a ROCm release such as '7.2.1' (two or three numbers separated by dots)",
    "rocm_repo_url": "an http:// or https:// URL such as 'https://repo.radeon.com/rocm/apt'",
    "rocm_repo_key_url": "an http:// or https:// URL such as 'https://repo.radeon.com/rocm/rocm.gpg.key'",
    "rocm_repo_key_fingerprint": (
        "the OpenPGP fingerprint of the repository's signing key as 40 hex digits (spaces allowed), such as "
        "AMD's 'CA8B B472 7A47 B4D0 9B4E E896 9386 B48A 1A69 3C5C'"
    ),
    "rocm_tarball_url": (
        "an http:// or https:// URL of a TheRock tarball, or None (required when rocm_source is 'therock')"
    ),
    "rocm_tarball_sha256": (
        "the sha256 of the tarball as 64 hex digits, or None (required when rocm_source is 'therock')"
    ),
    "rocm_packages_extra": (
        "a list of package names such as ['rocm-smi'] (never amdgpu-dkms or its firmware: "
        "its firmware package has shipped the MES 0x83 that hangs gfx1151)"
    ),
    "head_port": "a TCP port number from 1 to 65535",
    "head_bind_address": (
        "an IPv4 or IPv6 address (not a host name), or None for the host's rpc_bind_address "
        "if set, else 127.0.0.1"
    ),
    "head_gpu_layers": "'all', 'auto' or a whole number of layers from 0 to 100000 to offload",
    "head_flash_attn": "one of 'on', 'off' or 'auto'",
    "head_ctx_size": "a whole number of tokens from 0 (the model's own) to 16777216",
    "head_parallel": "a whole number of server slots from 1 to 256",
    "head_cache_type_k": "one of " + ", ".join(repr(t) for t in KV_CACHE_TYPES),
    "head_cache_type_v": "one of " + ", ".join(repr(t) for t in KV_CACHE_TYPES),
    "head_tensor_split": (
        "a list of non-negative proportions such as [3, 1, 1], at least one above 0 (one per device: "
        "the --rpc servers in inventory order, then the head's own GPU), or None for llama.cpp's split"
    ),
    "head_metrics": "True (serve Prometheus metrics on /metrics) or False",
    "head_log_verbosity": "a whole number from 0 (errors only) to 5 (debug); 4 logs where each buffer went",
    "head_api_key_file": "an absolute path of a root-only file on the head holding the API key(s), or None",
    "head_ready_timeout_s": "a whole number of seconds from 10 to 86400",
    "head_alias": (
        "a model name for the API such as 'qwen3-235b' (letters, digits and . _ : / @ + -, at most 128, "
        "no commas), or None for the model file's path"
    ),
    "head_jinja": "True (--jinja: the chat template runs in llama.cpp's Jinja engine), False (--no-jinja) or None",
    "head_chat_template_file": (
        "an absolute path of a Jinja chat template file on the head, such as '/srv/models/chat.jinja', "
        "or None for the template in the model's metadata"
    ),
    "head_batch_size": "a whole number of tokens from 1 to 1048576 (-b), or None for llama.cpp's default",
    "head_ubatch_size": (
        "a whole number of tokens from 1 to 1048576 (-ub), at most head_batch_size, or None for llama.cpp's default"
    ),
    "head_temperature": "a number from 0 to 10 (--temp), or None for llama.cpp's default",
    "head_top_p": "a number from 0 to 1 (--top-p; 1 = off), or None for llama.cpp's default",
    "head_top_k": "a whole number from 0 to 1000000 (--top-k; 0 = off), or None for llama.cpp's default",
    "head_min_p": "a number from 0 to 1 (--min-p; 0 = off), or None for llama.cpp's default",
    "head_warmup": "True (an empty run at start) or False (--no-warmup: the first request warms up)",
    "head_override_tensor": (
        "a list of tensor overrides such as ['blk\\\\.[0-9]+\\\\.ffn_.*_exps\\\\.=CPU'] "
        "('<tensor name regex>=<buffer type>', -ot; no spaces, quotes, commas or $ % ; & < > `)"
    ),
    "head_fit": (
        "'on' or 'off' (--fit: llama.cpp lowers unset settings until the model fits the devices; "
        "needs a build that has --fit), or None for the build's default"
    ),
    "head_fit_target_mib": "a whole number of MiB from 0 to 1048576 each device keeps free under --fit (-fitt), or None",
    "head_fit_ctx": "a whole number of tokens from 0 to 16777216, the smallest context --fit may choose (-fitc), or None",
    "head_fit_check": (
        "'on' (fail before a restart when the model cannot fit the devices), 'warn' (only say so) or 'off'"
    ),
    "head_fit_reserve_mib": "a whole number of MiB from 0 to 1048576 kept free on each device by the fit check",
    "head_rpc_servers": (
        "'all' (every RPC server of the inventory) or 'auto' (the fewest, in inventory order, the model fits on; "
        "not with head_tensor_split)"
    ),
    "head_extra_args": (
        "a list of further llama-server arguments such as ['--cache-reuse', '256'] (an option first; "
        "no spaces, quotes, backslashes or $ % ; & < > ` #; none that a head_ variable or model_path sets)"
    ),
    "head_env": (
        "a dict of environment variables for llama-server, such as {'ROCBLAS_USE_HIPBLASLT': '1'} "
        "(names: a letter or '_' first, then letters, digits or '_'; values: strings without newlines, "
        "NULs or other control characters, at most 4096 characters)"
    ),
    "model_path": "an absolute path of a GGUF file on the head, such as '/srv/models/model.gguf', or None",
    "model_url": "an http:// or https:// URL of a GGUF file, or None",
    "model_sha256": "the sha256 of the file at model_url as 64 hex digits, or None",
    "model_files": (
        "a list of the parts of a split GGUF model in order, each {'url': 'https://.../m-00001-of-00002.gguf', "
        "'sha256': '<64 hex digits>'} or {'hf': 'owner/repo/path/m-00001-of-00002.gguf', 'sha256': ...} "
        "(http or https; names '<name>-0000i-of-0000N.gguf', every part once), or [] (then model_path or model_url)"
    ),
    "model_hf_endpoint": "the http:// or https:// base URL of the Hugging Face hub, such as 'https://huggingface.co'",
    "model_hf_revision": "a branch, tag or commit of the repository, such as 'main'",
    "model_hf_token_file": (
        "an absolute path of a root-only file on the head holding a Hugging Face access token (one line), or None"
    ),
    "model_dir": "an absolute directory path such as '/var/lib/halo-provision/models'",
}


class Settings(BaseModel):
    """halo-provision variables of one host, validated (see group_data/all.py)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    # kernel and firmware
    kernel_min_version: KernelVersion = "6.16.9"
    kernel_recommended_version: KernelVersion = "6.18.4"
    kernel_oem_min_version: OemKernelVersion = "6.14.0-1018"
    firmware_bad_snapshots: list[Annotated[int, Strict(), AfterValidator(_check_date)]] = [20251125]

    # unified memory
    ttm_gib: Annotated[GiB, Field(ge=1, le=1024)] | None = None
    os_reserve_gib: Annotated[GiB, Field(ge=1, le=64)] = 8
    vram_carveout_max_gib: Annotated[GiB, Field(ge=0, le=128)] = 16

    # IOMMU
    iommu_mode: Literal["off", "pt", "keep"] = "off"

    # kernel command line and reboot (deploys/grub.py)
    kernel_extra_args: list[Annotated[str, Strict(), StringConstraints(pattern=_KERNEL_ARG_RE)]] = []
    kernel_allow_risky_args: Annotated[bool, Strict()] = False
    reboot_allowed: Annotated[bool, Strict()] = False
    reboot_timeout_s: Annotated[int, Strict(), Field(ge=60, le=7200)] = 900

    # GPU
    gpu_targets: Annotated[list[GpuTarget], Field(min_length=1)] = ["gfx1151"]
    gpu_users: list[UserName] = []

    # llama.cpp RPC server (workers)
    rpc_port: RpcPort = 50052
    rpc_bind_address: BindAddress = None
    rpc_allow_any_address: Annotated[bool, Strict()] = False
    rpc_instances: list[RpcInstance] = []
    rpc_env: EnvVars = {}
    rpc_cache_max_mib: Annotated[int, Strict(), Field(ge=0, le=16_777_216)] | None = None

    # llama.cpp build (every host of the cluster)
    llama_cpp_repo: Annotated[str, Strict(), StringConstraints(pattern=_GIT_URL_RE), AfterValidator(_check_git_url)] = (
        "https://github.com/ggml-org/llama.cpp"
    )
    llama_cpp_ref: Annotated[
        str, Strict(), StringConstraints(pattern=_GIT_REF_RE), AfterValidator(_check_git_ref)
    ] = "b10760"
    llama_cpp_backend: Literal["hip", "vulkan", "cpu"] = "hip"
    llama_cpp_prefix: Annotated[str, Strict(), StringConstraints(pattern=_ABS_PATH_RE)] = "/opt/llama.cpp"
    llama_cpp_build_once: Annotated[bool, Strict()] = True
    llama_cpp_cmake_extra_args: list[Annotated[str, Strict(), StringConstraints(pattern=_CMAKE_ARG_RE)]] = []
    llama_cpp_build_jobs: Annotated[int, Strict(), Field(ge=1, le=256)] | None = None
    llama_cpp_rpc_rdma: Annotated[bool, Strict()] = False

    # ROCm (deploys/rocm.py)
    rocm_source: Literal["distro", "amd-repo", "therock"] = "distro"
    rocm_version: Annotated[str, Strict(), StringConstraints(pattern=_ROCM_VERSION_RE)] = "7.2.1"
    rocm_repo_url: HttpUrl = "https://repo.radeon.com/rocm/apt"
    rocm_repo_key_url: HttpUrl = "https://repo.radeon.com/rocm/rocm.gpg.key"
    rocm_repo_key_fingerprint: Annotated[
        str, Strict(), AfterValidator(lambda v: v.replace(" ", "").upper()), StringConstraints(pattern=r"^[0-9A-Fa-f ]{40,50}$"),
        AfterValidator(_check_fingerprint)] = "CA8BB4727A47B4D09B4EE8969386B48A1A693C5C"
    rocm_tarball_url: HttpUrl | None = None
    rocm_tarball_sha256: (
        Annotated[str, Strict(), StringConstraints(pattern=_SHA256_RE), AfterValidator(str.lower)] | None
    ) = None
    rocm_packages_extra: list[
        Annotated[str, Strict(), StringConstraints(pattern=_PACKAGE_NAME_RE), AfterValidator(_check_not_dkms)]
    ] = []

    # llama-server (head; deploys/head.py)
    head_port: Port = 8080
    head_bind_address: BindAddress = None
    head_gpu_layers: Annotated[int, Strict(), Field(ge=0, le=100000)] | Literal["all", "auto"] = "all"
    head_flash_attn: Literal["on", "off", "auto"] = "on"
    head_ctx_size: Annotated[int, Strict(), Field(ge=0, le=16_777_216)] = 16384
    head_parallel: Annotated[int, Strict(), Field(ge=1, le=256)] = 1
    head_cache_type_k: KvCacheType = "f16"
    head_cache_type_v: KvCacheType = "f16"
    head_tensor_split: Annotated[list[Annotated[float, Strict(), Field(ge=0)]], Field(min_length=1)] | None = None
    head_metrics: Annotated[bool, Strict()] = True
    head_log_verbosity: Annotated[int, Strict(), Field(ge=0, le=5)] = 4
    head_api_key_file: AbsPath | None = None
    head_ready_timeout_s: Annotated[int, Strict(), Field(ge=10, le=86400)] = 600
    # llama-server tuning (deploys/serving.py)
    head_alias: Annotated[str, Strict(), StringConstraints(pattern=_ALIAS_RE)] | None = None
    head_jinja: Annotated[bool, Strict()] | None = None
    head_chat_template_file: AbsPath | None = None
    head_batch_size: Annotated[int, Strict(), Field(ge=1, le=1_048_576)] | None = None
    head_ubatch_size: Annotated[int, Strict(), Field(ge=1, le=1_048_576)] | None = None
    head_temperature: Annotated[float, Strict(), Field(ge=0, le=10)] | None = None
    head_top_p: Annotated[float, Strict(), Field(ge=0, le=1)] | None = None
    head_top_k: Annotated[int, Strict(), Field(ge=0, le=1_000_000)] | None = None
    head_min_p: Annotated[float, Strict(), Field(ge=0, le=1)] | None = None
    head_warmup: Annotated[bool, Strict()] = True
    head_override_tensor: list[Annotated[str, Strict(), StringConstraints(pattern=_OVERRIDE_TENSOR_RE)]] = []
    head_fit: Literal["on", "off"] | None = None
    head_fit_target_mib: Annotated[int, Strict(), Field(ge=0, le=1_048_576)] | None = None
    head_fit_ctx: Annotated[int, Strict(), Field(ge=0, le=16_777_216)] | None = None
    head_extra_args: list[Annotated[str, Strict(), StringConstraints(pattern=_EXTRA_ARG_RE)]] = []
    # fit check and the fewest RPC servers (deploys/fit.py)
    head_fit_check: Literal["on", "warn", "off"] = "on"
    head_fit_reserve_mib: Annotated[int, Strict(), Field(ge=0, le=1_048_576)] = 1024
    head_rpc_servers: Literal["all", "auto"] = "all"
    head_env: EnvVars = {}

    # the model llama-server serves (head; deploys/head.py)
    model_path: AbsPath | None = None
    model_url: HttpUrl | None = None
    model_sha256: Sha256 | None = None
    model_files: list[ModelFile] = []
    model_hf_endpoint: HttpUrl = "https://huggingface.co"
    model_hf_revision: Annotated[
        str, Strict(), StringConstraints(pattern=_GIT_REF_RE), AfterValidator(_check_git_ref)
    ] = "main"
    model_hf_token_file: AbsPath | None = None
    model_dir: AbsPath = "/var/lib/halo-provision/models"

    _host_name: str = PrivateAttr(default="<host>")
    _groups: tuple[str, ...] = PrivateAttr(default=())
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)
    _fix: dict[str, str] = PrivateAttr(default_factory=dict)
    _ssh_hostname: Any = PrivateAttr(default=None)
    _ssh_port: Any = PrivateAttr(default=22)

    @model_validator(mode="after")
    def _cross_field(self) -> Settings:
        issues: list[tuple[str, str]] = []
        if Version(self.kernel_recommended_version) < Version(self.kernel_min_version):
            issues.append(
                (
                    "kernel_recommended_version",
                    f"it is older than kernel_min_version = {self.kernel_min_version!r}; "
                    "expected a version at least kernel_min_version",
                )
            )
        address = self.rpc_bind_address
        if address is not None and not self.rpc_allow_any_address:
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
            value = getattr(self, variable)
            if isinstance(value, ipaddress.IPv6Address) and value.is_link_local and not value.scope_id:
                issues.append(
                    (
                        variable,
                        "a link-local IPv6 address means something only on one interface; expected it with "
                        f"its interface, such as '{value}%eth1', or the link's IPv4 address",
                    )
                )
        issues.extend(_path_problems(self))
        ports = [instance.port for instance in self.rpc_instances]
        for port in sorted({p for p in ports if ports.count(p) > 1}):
            issues.append(
                ("rpc_instances", f"port {port} is used by {ports.count(port)} instances; expected each on its own port")
            )
        issues.extend(("kernel_extra_args", d) for d in _kernel_extra_args_problems(self))
        issues.extend(_env_problems(self))
        if self.rocm_source == "therock":
            needs = {
                "rocm_tarball_url": "the http:// or https:// URL of the TheRock tarball to install",
                "rocm_tarball_sha256": "the tarball's sha256 (64 hex digits), checked before it is unpacked",
            }
            for variable, expected in needs.items():
                if getattr(self, variable) is None:
                    issues.append((variable, f"rocm_source is 'therock'; expected {expected}"))
        for arg in self.llama_cpp_cmake_extra_args:
            if arg.startswith("-DGGML_RPC_RDMA"):
                issues.append(("llama_cpp_cmake_extra_args", f"{arg!r} is set from llama_cpp_rpc_rdma; expected no "
                               "GGML_RPC_RDMA here (set llama_cpp_rpc_rdma = True instead)"))
        issues.extend(_model_problems(self))
        issues.extend(_serving_problems(self))
        if issues:
            raise PydanticCustomError(
                "halo_cross_field",
                "{summary}",
                {"summary": "; ".join(f"{v}: {d}" for v, d in issues), "issues": issues},
            )
        return self

    # -- identity ----------------------------------------------------------

    @property
    def host_name(self) -> str:
        """Name of the pyinfra host these settings belong to."""
        return self._host_name

    @property
    def groups(self) -> tuple[str, ...]:
        """The host's inventory groups."""
        return self._groups

    @property
    def is_head(self) -> bool:
        return HEAD_GROUP in self._groups

    @property
    def is_rpc_worker(self) -> bool:
        return RPC_WORKERS_GROUP in self._groups

    # -- derived values -----------------------------------------------------

    @property
    def kernel_min(self) -> Version:
        return Version(self.kernel_min_version)

    @property
    def kernel_recommended(self) -> Version:
        return Version(self.kernel_recommended_version)

    @property
    def kernel_oem_min(self) -> tuple[Version, int]:
        """(upstream version, ABI number) of kernel_oem_min_version: "6.14.0-1018" -> (6.14.0, 1018)."""
        version, _, abi = self.kernel_oem_min_version.partition("-")
        return Version(version), int(abi)

    @property
    def head_listen_address(self) -> IPAddress:
        """Address llama-server binds: head_bind_address, else rpc_bind_address, else 127.0.0.1."""
        if self.head_bind_address is not None:
            return self.head_bind_address
        if self.rpc_bind_address is not None:
            return self.rpc_bind_address
        return ipaddress.IPv4Address("127.0.0.1")

    @property
    def rpc_endpoint(self) -> str | None:
        """'address:port' of this host's RPC server ('[v6]:port' for IPv6), None without address."""
        if self.rpc_bind_address is None:
            return None
        return _endpoint(self.rpc_bind_address, self.rpc_port)

    @property
    def rpc_servers(self) -> list[RpcInstance]:
        """This worker's RPC servers: rpc_instances, or one on rpc_port when that list is empty."""
        return list(self.rpc_instances) or [RpcInstance(port=self.rpc_port)]

    @property
    def rpc_connect_address(self) -> IPAddress | None:
        """The address the heads connect to: rpc_bind_address, or when that is every address (0.0.0.0
        or ::, with rpc_allow_any_address) ssh_hostname when it is an IP address of that family; else None."""
        address = self.rpc_bind_address
        if address is None or not address.is_unspecified:
            return address
        try:
            ssh = _unmapped(ipaddress.ip_address(str(self._ssh_hostname)))
        except ValueError:
            return None
        if ssh.version != address.version or ssh.is_unspecified or ssh.is_loopback:
            return None
        return ssh

    @property
    def rpc_endpoints(self) -> list[str]:
        """'address:port' of each of this worker's RPC servers, as the heads connect to them."""
        address = self.rpc_connect_address
        if address is None:
            return []
        return [_endpoint(address, server.port) for server in self.rpc_servers]

    def rpc_servers_for(self, head: str) -> list[RpcInstance]:
        """The RPC servers of this worker that head `head` uses: those for every head or for `head`; none
        on the head itself (llama-server uses its own GPU directly)."""
        if head == self.host_name:
            return []
        return [server for server in self.rpc_servers if server.head in (None, head)]

    def rpc_endpoints_for(self, head: str) -> list[str]:
        """'address:port' of the RPC servers of this worker that head `head` uses (its --rpc list)."""
        address = self.rpc_connect_address
        if address is None:
            return []
        return [_endpoint(address, server.port) for server in self.rpc_servers_for(head)]

    @property
    def head_source_address(self) -> IPAddress | None:
        """The address this head's connections to the RPC servers come from; their firewalls allow it.

        rpc_bind_address (its cluster-link address), else head_bind_address, else ssh_hostname when
        that is an IP address; unspecified and loopback addresses do not count. None: none of those.
        """
        candidates = [self.rpc_bind_address, self.head_bind_address]
        try:
            candidates.append(ipaddress.ip_address(str(self._ssh_hostname)))
        except ValueError:
            pass
        for address in candidates:
            if address is not None and not (address.is_unspecified or address.is_loopback):
                return address
        return None

    def wanted_ttm_gib(self, installed_ram_bytes: int) -> int:
        """GiB the GPU may map through TTM/GTT: ttm_gib, or floor(installed GiB) - os_reserve_gib."""
        if isinstance(installed_ram_bytes, bool) or not isinstance(installed_ram_bytes, int):
            raise TypeError(f"installed_ram_bytes must be an int, got {installed_ram_bytes!r}")
        if installed_ram_bytes <= 0:
            raise ValueError(f"installed_ram_bytes must be positive, got {installed_ram_bytes}")
        installed_gib = installed_ram_bytes // GIB
        shown = f"{installed_ram_bytes / GIB:.1f} GiB"
        if self.ttm_gib is not None:
            if self.ttm_gib * GIB > installed_ram_bytes:
                raise SettingsError(
                    self._problem(
                        "ttm_gib",
                        f"the host has only {shown} of RAM installed; expected at most "
                        f"{installed_gib}, better {max(installed_gib - self.os_reserve_gib, 1)} to "
                        "leave os_reserve_gib for the OS, or None for installed RAM minus "
                        "os_reserve_gib",
                    )
                )
            return self.ttm_gib
        wanted = installed_gib - self.os_reserve_gib
        if wanted < 1:
            raise SettingsError(
                self._problem(
                    "os_reserve_gib",
                    f"the host has only {shown} of RAM installed, so installed RAM minus "
                    "os_reserve_gib leaves nothing for the GPU; expected a smaller "
                    f"os_reserve_gib (below {installed_gib}), or set ttm_gib",
                )
            )
        return wanted

    def ttm_pages(self, installed_ram_bytes: int) -> int:
        """ttm.pages_limit (4 KiB pages) for wanted_ttm_gib()."""
        return self.wanted_ttm_gib(installed_ram_bytes) * TTM_PAGES_PER_GIB

    # -- messages -----------------------------------------------------------

    def _shown(self, variable: str) -> Any:
        if variable in self._raw:
            return self._raw[variable]
        return getattr(self, variable)

    def _problem(self, variable: str, detail: str, fix: str | None = None) -> str:
        return _message(
            self._host_name,
            variable,
            self._shown(variable),
            detail,
            fix or self._fix.get(variable, DEFAULT_FIX),
        )


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
        problems.append(("head_tensor_split", "every entry is 0; " + VALID["head_tensor_split"]))
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


def _risky_kernel_arg(arg: str) -> str | None:
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
        why = _risky_kernel_arg(arg)
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


VARIABLES: tuple[str, ...] = tuple(Settings.model_fields)
LIST_VARIABLES = tuple(v for v, f in Settings.model_fields.items() if "list[" in str(f.annotation))

_unchecked = [v for v in VARIABLES if v not in VALID or not v.startswith(PREFIXES)]
if _unchecked:  # every variable needs a "what is valid" text and one of our prefixes
    raise RuntimeError(f"deploys/settings.py: add VALID text / a PREFIXES entry for {_unchecked}")
del _unchecked


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------


def _endpoint(address: IPAddress, port: int) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        return f"[{address}]:{port}"
    return f"{address}:{port}"


# Values never shown: a variable whose name says it holds a secret (an API key given inline, a token).
_SECRET_NAME_RE = re.compile(r"api_?key|token|secret|passw|credential", re.IGNORECASE)
_NOT_SECRET_SUFFIXES = ("_file", "_path", "_dir", "_sha256", "_url")
# In URLs: the userinfo before '@' (a password, or a token as the user name) and secret query parameters.
_URL_USERINFO_RE = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s'\"]+)@")
_URL_SECRET_QUERY_RE = re.compile(
    r"(?P<name>[?&;][^=&#\s'\"]*(?:token|key|secret|sig|passw|auth|credential)[^=&#\s'\"]*=)[^&#\s'\"]*",
    re.IGNORECASE,
)


def masked(text: str) -> str:
    """`text` with the secrets of the URLs in it replaced by ***, for messages and logs.

    >>> masked("https://x-access-token:ghs_abc@github.com/o/r?x=1&token=t0p")
    'https://x-access-token:***@github.com/o/r?x=1&token=***'
    >>> masked("https://hf_AbCdEf0123456789xyz@example.org/m.gguf ssh://git@host/repo")
    'https://***@example.org/m.gguf ssh://git@host/repo'
    """

    def userinfo(match: re.Match) -> str:
        user, colon, _ = match["userinfo"].partition(":")
        if colon:
            return f"{match['scheme']}{user}:***@"
        if re.fullmatch(r"[a-z_][a-z0-9_.-]{0,15}", user):  # a plain user name such as git
            return match[0]
        return f"{match['scheme']}***@"

    return _URL_SECRET_QUERY_RE.sub(r"\g<name>***", _URL_USERINFO_RE.sub(userinfo, text))


def _is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME_RE.search(name)) and not name.endswith(_NOT_SECRET_SUFFIXES)


def _shown_value(variable: str, value: Any) -> str:
    """`value` as a message shows it: repr, a secret variable's value hidden, URLs' secrets masked."""
    if _is_secret_name(variable) and value not in (None, True, False, "", [], {}):
        return "'<hidden>'"
    return masked(repr(value))


def _message(host: str, variable: str, value: Any, detail: str, fix: str) -> str:
    return masked(f"{host}: {variable} = {_shown_value(variable, value)} is invalid: {detail}. Fix it in {fix}.")


COMMAND_LINE_FIX = "the --data option on the command line"


def _command_line_list_hint(variable: str, value: Any) -> str:
    """How to give a list with --data, shown when pyinfra parsed one as a number or a plain string.

    >>> _command_line_list_hint("head_tensor_split", "1,1").split("e.g. ")[1]
    "--data 'head_tensor_split=[1, 1]'"
    """
    if isinstance(value, str):
        items: list[Any] = [item.strip() for item in value.split(",") if item.strip()]
        if variable == "head_tensor_split":
            items = [json.loads(item) if re.fullmatch(r"[0-9]+(\.[0-9]+)?", item) else item for item in items]
        kind = "a string"
    else:
        items, kind = [value], "True or False" if isinstance(value, bool) else "a number"
    example = json.dumps(items).replace("'", "")
    return (
        f"; pyinfra read --data {variable}={value} as {kind}, not a list: write the list in JSON and quote "
        f"it for the shell, e.g. --data '{variable}={example}'"
    )


def _fix_hint(host: Host, variable: str) -> str:
    """Where the host's value of `variable` comes from, as "Fix it in <this>."."""
    inventory = host.inventory
    override = getattr(host.data, "override_datas", {}) or {}
    if variable in override:
        return "the deploy code that assigns host.data." + variable
    if variable in (inventory.get_override_data() or {}):
        return COMMAND_LINE_FIX
    if variable in inventory.get_host_data(host.name):
        return DEFAULT_FIX
    for group in reversed(list(host.groups)):
        if variable in inventory.get_group_data(group):
            return f"group_data/{group}.py (or the {group} group's data in the inventory)"
    return DEFAULT_FIX


def _host_data(host: Host) -> dict[str, Any]:
    """The host's data without @deploy defaults: global < groups < host < --data < assigned."""
    inventory = host.inventory
    data: dict[str, Any] = {}
    data.update(inventory.get_data() or {})
    data.update(inventory.get_groups_data(host.groups))
    data.update(inventory.get_host_data(host.name))
    data.update(inventory.get_override_data() or {})
    data.update(getattr(host.data, "override_datas", {}) or {})
    return data


def _unknown_key_problem(host: str, key: str, value: Any, fix: str) -> str:
    retired = key if key in RETIRED else next(iter(difflib.get_close_matches(key, RETIRED, n=1, cutoff=0.85)), None)
    if retired is not None:
        named = "" if retired == key else f" (did you mean {retired}?)"
        return (
            f"{host}: {key} = {value!r} is no longer a halo-provision variable{named}: {RETIRED[retired]}. "
            f"Remove it from {fix}."
        )
    close = difflib.get_close_matches(key, VARIABLES, n=1, cutoff=0.6)
    if close:
        hint = f"did you mean {close[0]}?"
    else:
        prefix = next(p for p in PREFIXES if key.startswith(p))
        same_prefix = [v for v in VARIABLES if v.startswith(prefix)]
        hint = "valid names are " + ", ".join(same_prefix) + "."
    return masked(
        f"{host}: {key} = {_shown_value(key, value)} is not a halo-provision variable: {hint} "
        f"Fix the name in {fix}."
    )


def _validation_problems(
    host: str, error: ValidationError, raw: dict[str, Any], fix: Callable[[str], str]
) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for err in error.errors():
        ctx = err.get("ctx") or {}
        if err["type"] == "halo_cross_field":
            for variable, detail in ctx["issues"]:
                value = raw.get(variable, Settings.model_fields[variable].default)
                problems.append(_message(host, variable, value, detail, fix(variable)))
            continue
        variable = str(err["loc"][0])
        items = [part for part in err["loc"][1:] if isinstance(part, int)]
        detail = "expected " + VALID[variable]
        keys = [part for part in err["loc"][1:] if isinstance(part, str)]
        if items and isinstance(raw.get(variable), (list, tuple)):
            bad = raw[variable][items[0]]
            detail = f"entry {bad!r} is not allowed; " + detail
        elif keys and isinstance(raw.get(variable), dict) and keys[0] in raw[variable]:
            part = "name" if "[key]" in err["loc"] else "value"
            detail = f"the {part} of entry {keys[0]!r}: {raw[variable][keys[0]]!r} is not allowed; " + detail
        if variable in seen:  # one line per variable (unions report several errors)
            continue
        seen.add(variable)
        value = raw.get(variable, Settings.model_fields[variable].default)
        if variable in LIST_VARIABLES and not isinstance(value, list) and fix(variable) == COMMAND_LINE_FIX:
            detail += _command_line_list_hint(variable, value)
        problems.append(_message(host, variable, value, detail, fix(variable)))
    return problems


# Host data that is pyinfra's own (connectors, global arguments such as _sudo) or a connector's: never ours.
_PYINFRA_DATA_PREFIXES = ("_", "ssh_", "winrm_", "docker_", "dockerssh_", "podman_", "chroot_", "local_",
                          "terraform_", "vagrant_", "sudo_", "su_", "doas_")
# Names without our prefixes that users write for ours. An error when ignoring the name would silently
# drop security (the API key: llama-server would serve with no key); else a warning, as the name may be
# the user's own data (e.g. `model` for the hardware model).
_UNPREFIXED_SECURITY = {
    "api_key_file": "head_api_key_file", "apikey_file": "head_api_key_file", "api_keys_file": "head_api_key_file",
    "api_key": "head_api_key_file", "apikey": "head_api_key_file", "api_keys": "head_api_key_file",
    "llama_api_key_file": "head_api_key_file", "server_api_key_file": "head_api_key_file",
    "allow_any_address": "rpc_allow_any_address", "bind_address": "rpc_bind_address",
}
_UNPREFIXED_ALIASES = {
    "model": "model_path", "model_file": "model_path", "gguf": "model_path", "model_sha": "model_sha256",
    "llama_ref": "llama_cpp_ref", "llamacpp_ref": "llama_cpp_ref", "ref": "llama_cpp_ref",
    "backend": "llama_cpp_backend", "llama_backend": "llama_cpp_backend", "llama_repo": "llama_cpp_repo",
    "llama_prefix": "llama_cpp_prefix", "ctx_size": "head_ctx_size", "tensor_split": "head_tensor_split",
    "gpu_layers": "head_gpu_layers", "ngl": "head_gpu_layers", "flash_attn": "head_flash_attn",
    "parallel": "head_parallel", "extra_args": "kernel_extra_args", "cmdline": "kernel_extra_args",
}


def _normalized(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_NORMALIZED_VARIABLES = {_normalized(v): v for v in VARIABLES}


def _near_miss(key: str) -> tuple[str, bool] | None:
    """(our variable, is it an error) for a host data key without our prefixes that means one of ours."""
    if key in Settings.model_fields or key.startswith(PREFIXES) or key.startswith(_PYINFRA_DATA_PREFIXES):
        return None
    lowered = key.lower().replace("-", "_")
    if _normalized(key) in _NORMALIZED_VARIABLES:  # rpcport, RPC_PORT, rpc-port: ours, misspelt
        return _NORMALIZED_VARIABLES[_normalized(key)], True
    if lowered in _UNPREFIXED_SECURITY:
        return _UNPREFIXED_SECURITY[lowered], True
    if lowered in _UNPREFIXED_ALIASES:
        return _UNPREFIXED_ALIASES[lowered], False
    close = difflib.get_close_matches(lowered, VARIABLES, n=1, cutoff=0.85)
    return (close[0], False) if close else None


def _near_miss_message(host: str, key: str, value: Any, variable: str, error: bool, fix: str) -> str:
    consequence = (
        "it would be ignored" + (" and llama-server would serve with no API key" if variable == "head_api_key_file"
                                 else "")
    )
    if variable == "head_api_key_file" and "file" not in key.lower():
        variable += " (the path of a root-only file on the head holding the key, never the key itself)"
    return masked(
        f"{host}: {key} = {_shown_value(key, value)} is not a halo-provision variable ({consequence}): did you "
        f"mean {variable}? "
        + (f"Fix the name in {fix}." if error else f"Rename it in {fix}, or ignore this if {key} is your own data.")
    )


def _validate_host(host: Host) -> tuple[Settings | None, list[str]]:
    data = _host_data(host)
    raw = {key: data[key] for key in VARIABLES if key in data}

    def fix(variable: str) -> str:
        return _fix_hint(host, variable)

    problems = [
        _unknown_key_problem(host.name, key, value, fix(key))
        for key, value in data.items()
        if isinstance(key, str) and key.startswith(PREFIXES) and key not in Settings.model_fields
    ]
    for key, value in data.items():
        near = _near_miss(key) if isinstance(key, str) else None
        if near is not None and near[1]:
            problems.append(_near_miss_message(host.name, key, value, near[0], True, fix(key)))
    try:
        result = Settings.model_validate(raw)
    except ValidationError as e:
        problems.extend(_validation_problems(host.name, e, raw, fix))
        return None, problems
    result._host_name = host.name
    result._groups = tuple(host.groups)
    result._raw = raw
    result._fix = {variable: fix(variable) for variable in VARIABLES}
    result._ssh_hostname = data.get("ssh_hostname")
    result._ssh_port = data.get("ssh_port") or 22
    problems.extend(_service_port_problems(result))
    return result, problems


def _service_port_problems(s: Settings) -> list[str]:
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


# ---------------------------------------------------------------------------
# Inventory-wide validation
# ---------------------------------------------------------------------------


def _addresses_of(s: Settings) -> set[IPAddress]:
    """The host's own specific addresses the data names: rpc_bind_address, head_bind_address, ssh_hostname."""
    found = {s.rpc_bind_address, s.head_bind_address}
    try:
        found.add(ipaddress.ip_address(str(s._ssh_hostname)))
    except ValueError:
        pass
    return {a for a in found if a is not None and not (a.is_unspecified or a.is_loopback)}


def _cross_host_problems(inventory: Inventory, valid: dict[str, Settings]) -> list[str]:
    problems: list[str] = []
    workers = [valid[h.name] for h in inventory if h.name in valid and RPC_WORKERS_GROUP in h.groups]
    all_workers = [h.name for h in inventory if RPC_WORKERS_GROUP in h.groups]
    heads = [h.name for h in inventory if HEAD_GROUP in h.groups]

    # Every worker binds its RPC server to its own cluster-link address.
    for s in workers:
        if s.rpc_bind_address is None:
            problems.append(
                s._problem(
                    "rpc_bind_address",
                    f"{s.host_name} is in group {RPC_WORKERS_GROUP}, so it needs the address of its "
                    "cluster-link interface, e.g. '10.151.0.12'; expected an IPv4 or IPv6 address",
                    fix=f"the inventory's host data of {s.host_name}",
                )
            )

    # ... where the heads on other hosts reach it: not loopback, and not a head's own address
    # (that head's --rpc list would name the head itself, where no RPC server listens).
    heads_valid = [valid[name] for name in heads if name in valid]
    for s in workers:
        address = s.rpc_bind_address
        others = [h for h in heads_valid if h.host_name != s.host_name]
        if address is None or not others:
            continue
        if address.is_loopback:
            problems.append(
                s._problem(
                    "rpc_bind_address",
                    f"a loopback address is reachable from {s.host_name} only, and head "
                    f"{others[0].host_name} connects to it from another host; expected the address of "
                    f"{s.host_name}'s cluster-link interface, e.g. '10.151.0.12'",
                )
            )
            continue
        for h in others:
            if address in _addresses_of(h) and not (h.is_rpc_worker and h.rpc_bind_address == address):
                problems.append(
                    s._problem(
                        "rpc_bind_address",
                        f"it is an address of head {h.host_name}, which is not an RPC worker there, so "
                        f"{h.host_name}'s --rpc list would name {h.host_name} itself; expected "
                        f"{s.host_name}'s own cluster-link address",
                    )
                )

    # No two RPC servers on one address:port (the head could only reach one of them); every
    # instance of rpc_instances counts.
    taken: dict[tuple[IPAddress, int], str] = {}
    for s in workers:
        address = s.rpc_bind_address
        if address is None or address.is_unspecified:
            continue
        for port in sorted({server.port for server in s.rpc_servers}):
            key = (_unscoped(address), port)  # fe80::12%eth0 and fe80::12%eth1: one address on the link
            if key in taken:
                problems.append(
                    s._problem(
                        "rpc_bind_address",
                        f"{taken[key]} already runs an RPC server on {_endpoint(*key)}; expected "
                        "each worker's own cluster-link address (or a different rpc_port / rpc_instances port)",
                    )
                )
            else:
                taken[key] = s.host_name

    # llama-server and the RPC servers on one host must not share a port.
    for s in workers:
        ports = [server.port for server in s.rpc_servers]
        if not s.is_head or s.head_port not in ports:
            continue
        head_address, rpc_address = s.head_listen_address, s.rpc_bind_address or s.head_listen_address
        if head_address == rpc_address or head_address.is_unspecified or rpc_address.is_unspecified:
            source = "rpc_instances" if s.rpc_instances else "rpc_port"
            problems.append(
                s._problem(
                    "head_port",
                    f"{s.host_name} is head and RPC worker, and its RPC server already uses port "
                    f"{s.head_port} on {rpc_address}; expected a head_port different from every port of {source}",
                )
            )

    # The workers' firewalls open the RPC ports to the heads' addresses only: each head needs one.
    if workers:
        for h in inventory:
            head = valid.get(h.name)
            if head is not None and head.is_head and head.head_source_address is None:
                problems.append(
                    head._problem(
                        "rpc_bind_address",
                        f"{h.name} is in group {HEAD_GROUP}, and the RPC workers' firewalls accept "
                        "connections from the head's address only, but it has none: expected its "
                        "cluster-link address as rpc_bind_address (or head_bind_address, or an IP "
                        "address as ssh_hostname)",
                        fix=f"the inventory's host data of {h.name}",
                    )
                )

    problems.extend(_one_build_problems(inventory, valid))
    problems.extend(_rpc_client_problems(inventory, valid))

    # Workers are useless without a head that runs llama-server.
    if all_workers and not heads:
        problems.append(
            f"inventory: group {HEAD_GROUP} is empty but group {RPC_WORKERS_GROUP} has "
            f"{', '.join(all_workers)}: expected one host that runs llama-server in group "
            f"{HEAD_GROUP}. Fix it in the inventory: add e.g. {HEAD_GROUP} = [{all_workers[0]!r}]."
        )
    return problems


_ONE_BUILD = ("llama_cpp_ref", "llama_cpp_backend", "llama_cpp_cmake_extra_args")


def _one_build_problems(inventory: Inventory, valid: dict[str, Settings]) -> list[str]:
    """One llama.cpp commit, backend and flags on every head and worker: RPC client and servers speak one
    protocol. The first head's values are the reference; each host that differs is named."""
    members = [valid[h.name] for h in inventory
               if h.name in valid and (HEAD_GROUP in h.groups or RPC_WORKERS_GROUP in h.groups)]
    if len(members) < 2:
        return []
    reference = next((s for s in members if s.is_head), members[0])
    problems = []
    for s in members:
        for variable in _ONE_BUILD:
            want, have = getattr(reference, variable), getattr(s, variable)
            if have != want:
                problems.append(s._problem(
                    variable, f"{'head ' if reference.is_head else ''}{reference.host_name} has "
                    f"{masked(repr(want))}, and llama.cpp's RPC client and servers must run one build (commit, "
                    f"backend and flags) to speak one protocol; expected {masked(repr(want))} here, or the same "
                    "new value on every host (set it once in group_data/all.py)"))
    return problems


def _rpc_client_problems(inventory: Inventory, valid: dict[str, Settings]) -> list[str]:
    """What the heads connect to: an address (not 0.0.0.0), over IPv4, one head per RPC server."""
    problems = []
    heads = [h.name for h in inventory if HEAD_GROUP in h.groups]
    for h in inventory:
        s = valid.get(h.name)
        if s is None or not s.is_rpc_worker or s.rpc_bind_address is None:
            continue
        users = [name for name in heads if name != s.host_name]
        if not users:
            continue
        address = s.rpc_bind_address
        if address.is_unspecified and s.rpc_connect_address is None:
            problems.append(s._problem(
                "rpc_bind_address", f"the RPC server listens on every address, and the heads need one of "
                f"{s.host_name}'s addresses to connect to (never {address}); expected {s.host_name}'s "
                f"cluster-link address, or ssh_hostname as an IPv{address.version} address, which the heads "
                "then use"))
            continue
        connect = s.rpc_connect_address
        if connect is not None and connect.version == 6 and not connect.is_loopback:  # loopback: refused above
            problems.append(s._problem(
                "rpc_bind_address", f"llama.cpp's RPC client on head {users[0]} connects over IPv4 only (ggml-rpc "
                "resolves with gethostbyname and splits host:port at the first ':'); expected "
                f"{s.host_name}'s IPv4 cluster-link address"))
        variable = "rpc_instances" if s.rpc_instances else "rpc_port"
        for server in s.rpc_servers:
            if server.head is not None and server.head not in heads:
                problems.append(s._problem(
                    "rpc_instances", f"the server on port {server.port} is for head {server.head!r}, which is not "
                    f"in group {HEAD_GROUP}; expected one of {', '.join(heads) or 'the heads'}, or no 'head'"))
                continue
            clients = [name for name in users if server.head in (None, name)]
            if len(clients) > 1:
                example = [{"port": 50052 + i, "head": name} for i, name in enumerate(clients)]
                problems.append(s._problem(
                    variable, f"heads {' and '.join(clients)} would all use the RPC server on "
                    f"{_endpoint(s.rpc_connect_address or address, server.port)}, and an RPC server serves one "
                    f"client at a time; expected one server per head, e.g. rpc_instances = {example}"))
    return problems


def _warnings_of(host: Host, s: Settings | None) -> list[tuple[str, str]]:
    """(key, warning) for names of this host that look like ours and are ignored."""
    found = []
    data = _host_data(host)
    for key, value in data.items():
        near = _near_miss(key) if isinstance(key, str) else None
        if near is not None and not near[1]:
            found.append((key, _near_miss_message(host.name, key, value, near[0], False, _fix_hint(host, key))))
    if s is not None and not s.is_head:
        # head_* and model_* act on heads only: set for this host itself, it likely meant a head
        inventory = host.inventory
        own = dict(inventory.get_host_data(host.name))
        for group in host.groups:
            if not any(HEAD_GROUP in member.groups for member in inventory.get_group(group, [])):
                own.update(inventory.get_group_data(group))
        for key, value in own.items():
            if isinstance(key, str) and key.startswith(("head_", "model_")) and key in Settings.model_fields:
                found.append((key, masked(
                    f"{host.name}: {key} = {_shown_value(key, value)} has no effect: {host.name} is not in group "
                    f"{HEAD_GROUP}, and only heads run llama-server. Add {host.name} to group {HEAD_GROUP}, or "
                    f"remove {key} from {_fix_hint(host, key)}.")))
    return found


_GROUP_NAMES = (HEAD_GROUP, RPC_WORKERS_GROUP)


def _group_problems(inventory: Inventory) -> list[str]:
    """Groups whose name is almost ours ('heads', 'rpc_worker', 'rpc-workers') with hosts that are not in
    our group: those hosts would silently get nothing of that role."""
    problems = []
    for name, members in sorted(getattr(inventory, "groups", {}).items()):
        if name in _GROUP_NAMES or name == "all":
            continue
        for ours in _GROUP_NAMES:
            close = _normalized(name) == _normalized(ours) or (
                difflib.SequenceMatcher(None, name.lower(), ours).ratio() >= 0.8)
            if not close:
                continue
            missing = [h.name for h in members if ours not in h.groups]
            if missing:
                problems.append(
                    f"inventory: group {name} = {missing!r} is not a halo-provision group: did you mean {ours}? "
                    f"Its hosts would get nothing of group {ours}'s role. Fix it in the inventory: rename "
                    f"{name} to {ours} (and group_data/{name}.py to group_data/{ours}.py).")
    return problems


def _network(address: IPAddress) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The /24 (IPv4) or /64 (IPv6) around `address`: a guess at its link, for warnings only."""
    return ipaddress.ip_network(f"{_unscoped(address)}/{24 if address.version == 4 else 64}", strict=False)


def _head_source_warnings(valid: dict[str, Settings]) -> list[str]:
    """A head whose address for the workers' firewalls comes from head_bind_address or ssh_hostname, on
    another network than every worker: it likely connects from another address, which they refuse."""
    workers = [s.rpc_connect_address for s in valid.values() if s.is_rpc_worker and s.rpc_connect_address]
    found = []
    for s in valid.values():
        source = s.head_source_address
        if not s.is_head or source is None or s.rpc_bind_address is not None or not workers:
            continue
        if any(w.version == source.version and w in _network(source) for w in workers):
            continue
        variable = "head_bind_address" if s.head_bind_address == source else "ssh_hostname"
        found.append(
            f"{s.host_name}: the RPC workers' firewalls accept head {s.host_name} from {source} ({variable}), but "
            f"no worker is on its network ({_network(source)}): {s.host_name} connects to them from its "
            "address toward them, which they would refuse. Set rpc_bind_address of "
            f"{s.host_name} to its cluster-link address in {s._fix.get('rpc_bind_address', DEFAULT_FIX)}."
        )
    return found


def inventory_warnings(inventory: Inventory, valid: dict[str, Settings] | None = None) -> list[str]:
    """Things that look wrong but may be meant, once each: a name close to one of our variables (but
    maybe the user's own data), a head_* / model_* variable set for a host that is not a head, a head
    whose address for the workers' firewalls is on another network than the workers."""
    valid = valid or {}
    seen: dict[str, str] = {}
    for host in inventory:
        for key, message in _warnings_of(host, valid.get(host.name)):
            where = message.split(" = ", 1)[1]
            seen.setdefault(f"{key}={where}", message)
    return list(seen.values()) + _head_source_warnings(valid)


def validate_inventory(inventory: Inventory) -> dict[str, Settings]:
    """Validate every host of `inventory` plus the cross-host checks.

    Returns {host name: Settings}; raises SettingsError listing every problem of
    every host, one per line.
    """
    valid: dict[str, Settings] = {}
    problems: list[str] = []
    for host in inventory:
        result, host_problems = _validate_host(host)
        problems.extend(host_problems)
        if result is not None:
            valid[host.name] = result
    problems.extend(_group_problems(inventory))
    problems.extend(_cross_host_problems(inventory, valid))
    if problems:
        raise SettingsError(problems)
    for warning in inventory_warnings(inventory, valid):
        logger.warning(warning)
    return valid


_STATE_ATTR = "_halo_provision_settings"


def settings(host: Host) -> Settings:
    """The validated settings of `host`.

    The first call in a pyinfra run validates all hosts of the inventory and
    caches the result (or the error) on the State, so a bad value anywhere
    stops the run before any operation is added.
    """
    state = getattr(host, "state", None)
    if state is None:  # host not attached to a State (plain API use): no cache
        return validate_inventory(host.inventory)[host.name]

    cached = getattr(state, _STATE_ATTR, None)
    if cached is None or (isinstance(cached, dict) and host.name not in cached):
        try:
            cached = validate_inventory(state.inventory)
        except SettingsError as e:
            cached = e
        setattr(state, _STATE_ATTR, cached)
    if isinstance(cached, SettingsError):
        raise SettingsError(cached.problems)
    return cached[host.name]
