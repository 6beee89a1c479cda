"""The types of halo-provision's variables: patterns, ranges and checks of single values, and the two
nested models (an RPC server of rpc_instances, a part of model_files).

    >>> from pydantic import TypeAdapter
    >>> TypeAdapter(RpcPort).validate_python(50052)
    50052
    >>> str(TypeAdapter(BindAddress).validate_python("::ffff:10.151.0.12"))
    '10.151.0.12'
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from typing import Annotated, Any, Literal

from packaging.version import InvalidVersion, Version
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    model_validator,
)

from facts.memory import GIB

# ttm.pages_limit counts 4 KiB pages: 1 GiB = 262144 pages.
TTM_PAGES_PER_GIB = GIB // 4096

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

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

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


def unmapped(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address ('::ffff:10.151.0.12') as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def unscoped(address: IPAddress) -> IPAddress:
    """`address` without an IPv6 scope ('fe80::12%eth1' -> 'fe80::12'): the same address on the link."""
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return ipaddress.IPv6Address(str(address).partition("%")[0])
    return address


# An IPv6 scope names an interface (Linux: at most 15 characters) or its index: it reaches units, env
# files and firewall rules, and Python's ipaddress takes any text after '%'.
_SCOPE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def _check_bindable(value: IPAddress | None) -> IPAddress | None:
    if value is not None and value.is_multicast:
        raise ValueError("multicast address")
    if isinstance(value, ipaddress.IPv6Address) and value.scope_id and not _SCOPE_RE.match(value.scope_id):
        raise ValueError("not an interface name after '%'")
    # '::ffff:10.151.0.12' is 10.151.0.12: judged (private? a duplicate?) and used as IPv4
    return None if value is None else unmapped(value)


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
# A trust anchor (a signing key) is fetched over https only: over http anyone on the way could swap it.
HttpsUrl = Annotated[str, Strict(), StringConstraints(pattern=_HTTP_URL_RE.replace("https?", "https"))]
# ggml device names for `ggml-rpc-server -d`, e.g. "ROCm0" or "Vulkan0,Vulkan1".
DeviceList = Annotated[str, Strict(), StringConstraints(pattern=r"^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$")]
# Environment of a service: POSIX names; values without newlines, NULs or other control characters
# (tab allowed), so one quoted line of a systemd EnvironmentFile holds each (deploys/common.py).
EnvName = Annotated[str, Strict(), StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
EnvValue = Annotated[str, Strict(), StringConstraints(pattern=r"^[^\x00-\x08\x0a-\x1f\x7f]{0,4096}$")]
EnvVars = dict[EnvName, EnvValue]

# Environment variables the steps set themselves, with the variable that sets each: refused in
# rpc_env / rpc_instances env (halo-rpc@.service, rpc-<port>.env) and head_env (llama-server.env).
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

Fingerprint = Annotated[
    str, Strict(), AfterValidator(lambda v: v.replace(" ", "").upper()), StringConstraints(pattern=r"^[0-9A-Fa-f ]{40,50}$"),
    AfterValidator(_check_fingerprint)]
GitUrl = Annotated[str, Strict(), StringConstraints(pattern=_GIT_URL_RE), AfterValidator(_check_git_url)]
GitRef = Annotated[str, Strict(), StringConstraints(pattern=_GIT_REF_RE), AfterValidator(_check_git_ref)]
KernelArg = Annotated[str, Strict(), StringConstraints(pattern=_KERNEL_ARG_RE)]
CmakeArg = Annotated[str, Strict(), StringConstraints(pattern=_CMAKE_ARG_RE)]
RocmVersion = Annotated[str, Strict(), StringConstraints(pattern=_ROCM_VERSION_RE)]
PackageName = Annotated[str, Strict(), StringConstraints(pattern=_PACKAGE_NAME_RE), AfterValidator(_check_not_dkms)]
SnapshotDate = Annotated[int, Strict(), AfterValidator(_check_date)]
Alias = Annotated[str, Strict(), StringConstraints(pattern=_ALIAS_RE)]
OverrideTensor = Annotated[str, Strict(), StringConstraints(pattern=_OVERRIDE_TENSOR_RE)]
ExtraArg = Annotated[str, Strict(), StringConstraints(pattern=_EXTRA_ARG_RE)]



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




def endpoint(address: IPAddress, port: int) -> str:
    """'address:port' as llama.cpp's --rpc list writes it ('[v6]:port' for IPv6).

    >>> endpoint(ipaddress.ip_address("fd51::12"), 50052)
    '[fd51::12]:50052'
    """
    if isinstance(address, ipaddress.IPv6Address):
        return f"[{address}]:{port}"
    return f"{address}:{port}"
