"""The model of one host's variables: each field's type, default and texts, and the host's derived values.

Each field says, besides its type and default, what it means (`description`: README's table), its
one-line summary (group_data/all.py's comment) and what is valid (the tail of its error message); the
README table and group_data/all.py are checked against them (tests/unit/test_variables_documented.py,
`python -m deploys.settings.docs` rewrites them).

    >>> Settings(rpc_bind_address="10.151.0.12").rpc_endpoint
    '10.151.0.12:50052'
    >>> Settings.model_fields["rpc_port"].json_schema_extra["summary"]
    'TCP port of the RPC server.'
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from packaging.version import Version
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, Strict, model_validator
from pydantic_core import PydanticCustomError

from deploys.settings.fields import (
    GIB,
    PREFIXES,
    TTM_PAGES_PER_GIB,
    AbsPath,
    Alias,
    BindAddress,
    CmakeArg,
    ExtraArg,
    Fingerprint,
    GiB,
    GitRef,
    GitUrl,
    GpuTarget,
    HttpUrl,
    HttpsUrl,
    IPAddress,
    KernelArg,
    KernelVersion,
    KvCacheType,
    ModelFile,
    OemKernelVersion,
    OverrideTensor,
    PackageName,
    Port,
    RocmVersion,
    RpcInstance,
    RpcPort,
    Sha256,
    SnapshotDate,
    UserName,
    EnvVars,
    endpoint,
    unmapped,
)
from deploys.settings.messages import SettingsError, message
from deploys.settings.provenance import DEFAULT_FIX
from deploys.settings.rules import host_problems

HEAD_GROUP = "head"
RPC_WORKERS_GROUP = "rpc_workers"


def var(default: Any, summary: str, *, valid: str, doc: str) -> Any:
    """A variable's field: its default, its one-line summary (group_data/all.py's comment), what is valid
    (an error says "expected <valid>") and what it means (README's table, the field's description)."""
    return Field(default, description=doc, json_schema_extra={"summary": summary, "valid": valid})


class Settings(BaseModel):
    """halo-provision variables of one host, validated (see group_data/all.py)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kernel_min_version: KernelVersion = var(
        "6.16.9",
        "Oldest kernel accepted: older kernels show ROCm only ~15.5 GiB of GTT.",
        valid="a kernel version such as '6.16.9' (two or three numbers separated by dots)",
        doc="Oldest kernel accepted; older mainline kernels let ROCm see only ~15.5 GiB of GTT whatever "
            "`ttm.pages_limit` says.",
    )
    kernel_recommended_version: KernelVersion = var(
        "6.18.4",
        "Kernel with the gfx1151 stability fixes ROCm 7.2 needs; older kernels get a warning.",
        valid="a kernel version such as '6.18.4' (two or three numbers separated by dots), not older than "
              "kernel_min_version",
        doc="Kernel with the gfx1151 stability fixes ROCm 7.2 needs; older kernels (at least "
            "`kernel_min_version`) get a warning.",
    )
    kernel_oem_min_version: OemKernelVersion = var(
        "6.14.0-1018",
        "Oldest Ubuntu OEM kernel (-oem flavour) accepted, version-ABI: AMD supports gfx1151 from "
        "6.14.0-1018-oem.",
        valid="an Ubuntu kernel version and ABI number such as '6.14.0-1018' (three numbers separated by "
              "dots, '-', the ABI number of the OEM kernel release)",
        doc="Oldest Ubuntu OEM kernel (release `<version>-<ABI>-oem`) accepted, as version-ABI: AMD's Strix "
            "Halo support table lists Ubuntu 24.04's OEM kernels from 6.14.0-1018 as supported for gfx1151 "
            "(the fixes are backported), so `kernel_min_version` and the warning do not apply to them.",
    )
    firmware_bad_snapshots: list[SnapshotDate] = var(
        [20251125],
        "linux-firmware snapshots (YYYYMMDD) that fail a Fedora host: 20251125 ships MES 0x83, which hangs "
        "gfx1151.",
        valid="a list of linux-firmware snapshot dates known to be bad, as whole numbers YYYYMMDD, e.g. "
              "[20251125]",
        doc="linux-firmware snapshots (`YYYYMMDD`) that fail a Fedora host: 20251125 ships MES 0x83, which "
            "hangs gfx1151 (20251111, the rollback AMD engineers advise, passes). Replaces "
            "`firmware_min_date`, which is now an error saying so. Debian and Ubuntu backport fixes into old "
            "snapshot dates, so their dates are not judged; the loaded MES version is, wherever debugfs is "
            "readable.",
    )

    # unified memory
    ttm_gib: Annotated[GiB, Field(ge=1, le=1024)] | None = var(
        None,
        "GiB the GPU may map through TTM/GTT (pages_limit = ttm_gib * 262144); None = RAM - os_reserve_gib.",
        valid="a whole number of GiB from 1 to 1024, or None for installed RAM minus os_reserve_gib",
        doc="GiB of RAM the GPU may map through TTM/GTT, 1 to 1024; sets `ttm.pages_limit = ttm_gib * "
            "262144`. `None` = installed RAM minus `os_reserve_gib` (120 on a 128 GB box). Must not exceed "
            "installed RAM.",
    )
    os_reserve_gib: Annotated[GiB, Field(ge=1, le=64)] = var(
        8,
        "GiB of RAM kept for the OS when ttm_gib is None.",
        valid="a whole number of GiB from 1 to 64",
        doc="GiB of RAM kept for the OS when `ttm_gib` is `None`, 1 to 64.",
    )
    vram_carveout_max_gib: Annotated[GiB, Field(ge=0, le=128)] = var(
        16,
        "Largest BIOS UMA carve-out (dedicated VRAM) in GiB verify accepts; a larger one starves the OS.",
        valid="a whole number of GiB from 0 to 128",
        doc="Largest BIOS UMA carve-out (dedicated VRAM) in GiB, 0 to 128, that verify accepts; a larger one "
            "starves the OS, so verify fails.",
    )

    # IOMMU
    iommu_mode: Literal["off", "pt", "keep"] = var(
        "off",
        '"off" adds amd_iommu=off, "pt" adds iommu=pt, "keep" leaves the kernel command line as is.',
        valid="one of 'off' (amd_iommu=off), 'pt' (iommu=pt) or 'keep' (leave the kernel command line as is)",
        doc='`"off"` adds `amd_iommu=off`, `"pt"` adds `iommu=pt`, `"keep"` leaves the kernel command line as'
            " is.",
    )

    # kernel command line and reboot (deploys/grub.py)
    kernel_extra_args: list[KernelArg] = var(
        [],
        'More kernel arguments, "key=value" or "flag", e.g. ["amdgpu.cwsr_enable=0"]; ttm and iommu come from'
        " above.",
        valid="a list of kernel arguments such as ['amdgpu.cwsr_enable=0', 'nowatchdog'] ('key=value' or a "
              "flag; no spaces, quotes or shell characters)",
        doc='More kernel arguments set by `deploys/grub.py`, `"key=value"` or `"flag"`, e.g. '
            '`["amdgpu.cwsr_enable=0"]`; the ttm and IOMMU ones come from `ttm_gib` and `iommu_mode`.',
    )
    kernel_allow_risky_args: Annotated[bool, Strict()] = var(
        False,
        "Allow kernel_extra_args that may take a host off the network or the GPU off the bus (init=, "
        "nomodeset...).",
        valid="True (set kernel_extra_args that may take the host off the network or the GPU off the bus, "
              "such as nomodeset or init=, on purpose) or False",
        doc="Allow `kernel_extra_args` that may take a host off the network or the GPU off the bus: `init=`, "
            "`systemd.unit=`, rescue/emergency, `nomodeset`, `amdgpu.modeset=0`, `amdgpu.gttsize` (fights "
            "`ttm.pages_limit`), amdgpu in `modprobe.blacklist`/`module_blacklist`/`rd.driver.blacklist`, "
            "`net.ifnames`, `ip=`, `mem=`... Refused unless `True`.",
    )
    reboot_allowed: Annotated[bool, Strict()] = var(
        False,
        'Reboot a host whose running kernel lacks the arguments; False = report "reboot pending".',
        valid="True (reboot a host whose running kernel lacks the arguments) or False (report it)",
        doc="Reboot a host whose running kernel lacks the arguments, and check `/proc/cmdline` afterwards; "
            '`False` prints "reboot pending on <host>".',
    )
    reboot_timeout_s: Annotated[int, Strict(), Field(ge=60, le=7200)] = var(
        900,
        "Seconds to wait for a host to come back after that reboot.",
        valid="a whole number of seconds from 60 to 7200",
        doc="Seconds to wait for a host to come back after that reboot, 60 to 7200.",
    )

    # GPU
    gpu_targets: Annotated[list[GpuTarget], Field(min_length=1)] = var(
        ["gfx1151"],
        "AMD GPU targets llama.cpp is built for (Radeon 8060S = gfx1151).",
        valid="a non-empty list of AMD GPU targets such as ['gfx1151'] ('gfx' followed by 3 or 4 digits and "
              "an optional hex digit)",
        doc="AMD GPU targets llama.cpp is built for (Radeon 8060S = `gfx1151`); non-empty list.",
    )
    gpu_users: list[UserName] = var(
        [],
        "Users added to the render and video groups so they can use the GPU.",
        valid="a list of Linux user names such as ['alice'] (a lowercase letter or '_' first, then lowercase "
              "letters, digits, '_' or '-', at most 32 characters)",
        doc="Linux users added to the `render` and `video` groups.",
    )

    # llama.cpp RPC server (workers)
    rpc_port: RpcPort = var(
        50052,
        "TCP port of the RPC server.",
        valid="a TCP port number from 1024 to 65535 that no other service of the host uses, such as 50052 "
              "(the unprivileged RPC server cannot bind a lower one)",
        doc="TCP port of the llama.cpp RPC server on hosts in group `rpc_workers`, 1024 to 65535 (the "
            "unprivileged server cannot bind lower ones), not the host's `ssh_port` nor its `head_port`.",
    )
    rpc_bind_address: BindAddress = var(
        None,
        "Address the RPC server binds: each worker sets its cluster-link address in the inventory.",
        valid="the IPv4 or IPv6 address (not a host name) of this worker's cluster-link interface, e.g. "
              "'10.151.0.12' (a link-local IPv6 address with its interface: 'fe80::12%eth1', the interface's "
              "name in letters, digits, '.', '_' or '-'), or None on hosts that are not in group rpc_workers",
        doc="IP address the RPC server binds: each worker sets its cluster-link address; required in group "
            "`rpc_workers`, unique per address:port.",
    )
    rpc_allow_any_address: Annotated[bool, Strict()] = var(
        False,
        "Allow rpc_bind_address 0.0.0.0, :: or a public address (the RPC server has no authentication).",
        valid="True or False",
        doc="Allow `rpc_bind_address` `0.0.0.0`, `::` or a public address. The RPC server has no "
            "authentication: keep it on a private link.",
    )
    rpc_instances: list[RpcInstance] = var(
        [],
        'RPC servers of this worker, e.g. [{"port": 50052, "device": "ROCm0", "threads": 8}]; [] = one on '
        "rpc_port.",
        valid="a list of RPC servers such as [{'port': 50052, 'device': 'ROCm0', 'threads': 8}] (port 1024 to"
              " 65535, each port once; optional device: ggml device names separated by commas; optional "
              "threads 1 to 1024; optional head: the name of the one head that uses this server; optional "
              "env: a dict like rpc_env, over it for this instance), or [] for one server on rpc_port",
        doc='RPC servers of a worker, one systemd unit `halo-rpc@<port>` each: a list of `{"port": 50052, '
            '"device": "ROCm0", "threads": 8}` (`device` and `threads` optional: passed as `-d`/`-t` only '
            "when set; ports unique; optional `head`: the one head that uses this server). `[]` = one server "
            "on `rpc_port`. Their ports accept the head's address only (firewall). An RPC server serves one "
            'client at a time: with several heads, give each its own server (`{"port": 50053, "head": '
            '"halo4"}`). An entry\'s optional `env` (a dict like `rpc_env`) goes over `rpc_env` for that '
            "instance only.",
    )
    rpc_env: EnvVars = var(
        {},
        'Environment of the RPC servers, e.g. {"GGML_VK_VISIBLE_DEVICES": "0"}; an instance\'s "env" goes over'
        " it.",
        valid="a dict of environment variables for the RPC servers, such as {'GGML_VK_VISIBLE_DEVICES': '0'} "
              "(names: a letter or '_' first, then letters, digits or '_'; values: strings without newlines, "
              "NULs or other control characters, at most 4096 characters)",
        doc="Environment variables of every RPC server on the worker, names to strings, e.g. "
            '`{"GGML_VK_VISIBLE_DEVICES": "0"}` (Vulkan: ggml skips CPU-type devices such as Mesa\'s lavapipe '
            'unless named here) or `{"ROCBLAS_USE_HIPBLASLT": "1"}`. Written quoted into the instance\'s '
            "root-only `/etc/halo-provision/rpc-<port>.env`; a change restarts that instance only. Names the "
            "step sets (`RPC_*`, `LLAMA_CACHE`, `MESA_SHADER_CACHE_DIR`, `LLAMA_BUILD_ID`) are refused. "
            "Nothing is set by default, on purpose: not `HSA_OVERRIDE_GFX_VERSION` (not needed on ROCm 7.x "
            "for gfx1151, and has caused faults) nor `GGML_CUDA_ENABLE_UNIFIED_MEMORY` (on by mere presence).",
    )
    rpc_cache_max_mib: Annotated[int, Strict(), Field(ge=0, le=16_777_216)] | None = var(
        None,
        "0 = no cache; None = a tenth of the file system that holds it.",
        valid="a whole number of MiB from 0 (no tensor cache) to 16777216, or None for a tenth of the file "
              "system that holds /var/lib/halo-rpc",
        doc="Most MiB the RPC servers' tensor cache (`ggml-rpc-server -c`, in `/var/lib/halo-rpc/rpc`, shared"
            " by a worker's instances) keeps: before each start and after each stop of an instance the least "
            "recently used files go until the rest fits (users have seen this cache grow to 0.5-1.4 TB "
            "unbounded). `0` = no cache (`-c` not passed, the directory emptied); `None` = a tenth of the "
            "file system that holds it. llama.cpp caches only tensors larger than 10 MiB.",
    )

    # llama.cpp build (every host of the cluster)
    llama_cpp_repo: GitUrl = var(
        "https://github.com/ggml-org/llama.cpp",
        "Git repository of llama.cpp (a URL or a path on the host).",
        valid="a git repository URL (https://, http://, git://, ssh://, file://) or an absolute path, e.g. "
              "'https://github.com/ggml-org/llama.cpp' (printable characters, no spaces; not an option such "
              "as '-u...', no remote helper such as 'ext::', no host starting with '-')",
        doc="Git repository of llama.cpp: a URL, or an absolute path on the host.",
    )
    llama_cpp_ref: GitRef = var(
        "b10760",
        "Release tag or commit built on every host; RPC client and servers must run the same one.",
        valid="a release tag such as 'b10760' or a commit hash (7 to 40 hex digits)",
        doc="Release tag or commit built on every host; the RPC client and servers must run one commit.",
    )
    llama_cpp_backend: Literal["hip", "vulkan", "cpu"] = var(
        "hip",
        'GPU backend: "hip" (ROCm, GPU_TARGETS from gpu_targets), "vulkan" or "cpu"; GGML_RPC is always on.',
        valid="one of 'hip' (ROCm), 'vulkan' or 'cpu'",
        doc='`"hip"` (ROCm; `GPU_TARGETS` from `gpu_targets`), `"vulkan"` or `"cpu"`; `GGML_RPC` is always '
            "on.",
    )
    llama_cpp_prefix: AbsPath = var(
        "/opt/llama.cpp",
        "Where sources (src/), builds (builds/<commit>-<flags>/) and the `current` link live.",
        valid="an absolute directory path such as '/opt/llama.cpp'",
        doc="Where the clone (`src/`), the builds (`builds/<commit>-<flags>/`) and the `current` link live.",
    )
    llama_cpp_build_once: Annotated[bool, Strict()] = var(
        True,
        "Build on one host per distro and backend, copy the result to the others (one binary everywhere).",
        valid="True (build on one host per distro and backend, copy to the others) or False",
        doc="Build on one host per distro and backend and copy the result to the others, so the cluster runs "
            "one binary.",
    )
    llama_cpp_cmake_extra_args: list[CmakeArg] = var(
        [],
        'Extra CMake settings added to the build, e.g. ["-DGGML_HIP_NO_VMM=ON"]; part of the build\'s '
        "identity.",
        valid="a list of CMake cache settings such as ['-DGGML_HIP_NO_VMM=ON'] ('-D<NAME>=<value>', printable"
              " characters, no spaces; GGML_RPC_RDMA comes from llama_cpp_rpc_rdma)",
        doc='Extra CMake settings such as `["-DGGML_HIP_NO_VMM=ON"]`; they are part of the build\'s identity.',
    )
    llama_cpp_build_jobs: Annotated[int, Strict(), Field(ge=1, le=256)] | None = var(
        None,
        "Parallel compile jobs; None = all cores of the build host.",
        valid="a whole number of parallel compile jobs from 1 to 256, or None for all cores",
        doc="Parallel compile jobs; `None` = all cores of the build host.",
    )
    llama_cpp_rpc_rdma: Annotated[bool, Strict()] = var(
        False,
        "Build ggml-rpc's RDMA transport (libibverbs then needed on every host); False = plain TCP only.",
        valid="True (build the RPC backend's RDMA transport: every host then needs libibverbs) or False",
        doc="Build ggml-rpc's RDMA transport (`-DGGML_RPC_RDMA=ON`); every host running the build then needs "
            "libibverbs. `False` passes `-DGGML_RPC_RDMA=OFF`: upstream turns it on by itself when the build "
            "host has libibverbs.",
    )

    # ROCm (deploys/rocm.py)
    rocm_source: Literal["distro", "amd-repo", "therock"] = var(
        "distro",
        'Where ROCm comes from: "distro" (Fedora, Debian testing), "amd-repo" (AMD\'s apt repo) or "therock" '
        "(tarball).",
        valid="one of 'distro' (Fedora's or Debian testing's own packages), 'amd-repo' (AMD's apt repository,"
              " Ubuntu and Debian) or 'therock' (a TheRock tarball from rocm_tarball_url)",
        doc='Where ROCm comes from: `"distro"` (Fedora\'s packages, Debian testing "forky"\'s own, in `/usr`), '
            '`"amd-repo"` (AMD\'s apt repository on Ubuntu and Debian: keyring, deb822 source, pin 600; '
            '`/opt/rocm`) or `"therock"` (a tarball unpacked under `/opt/rocm-<version>`). The llama.cpp '
            "build finds ROCm's `bin/` and `llvm/bin` there. Refused before any change where it cannot build "
            'llama.cpp\'s HIP backend (which needs HIP >= 6.1): `"distro"` on Ubuntu (no gfx1151 rocBLAS '
            "kernels), Debian 12 (no hipBLAS/rocBLAS) and Debian 13 (HIP 5.7). amdgpu-dkms is never "
            "installed.",
    )
    rocm_version: RocmVersion = var(
        "7.2.1",
        "ROCm release for amd-repo and therock; AMD supports Strix Halo with 7.2.x on kernels >= 6.18.4 (not "
        "7.1.x).",
        valid="a ROCm release such as '7.2.1' (two or three numbers separated by dots)",
        doc="ROCm release: AMD's repository directory (`amd-repo`) and `/opt/rocm-<version>` (`therock`). "
            "AMD's Strix Halo support table lists 7.2.x as supported and 7.1.x as unsupported on kernels >= "
            "6.18.4.",
    )
    rocm_repo_url: HttpUrl = var(
        "https://repo.radeon.com/rocm/apt",
        "Base URL of AMD's apt repository; rocm_version is appended.",
        valid="an http:// or https:// URL such as 'https://repo.radeon.com/rocm/apt'",
        doc="Base URL of AMD's apt repository; `rocm_version` is appended.",
    )
    rocm_repo_key_url: HttpsUrl = var(
        "https://repo.radeon.com/rocm/rocm.gpg.key",
        "ASCII-armoured signing key of that repository, dearmored into /etc/apt/keyrings/rocm.gpg.",
        valid="an https:// URL such as 'https://repo.radeon.com/rocm/rocm.gpg.key' (never http://: apt's "
              "signing key must not be fetched where anyone on the way could swap it)",
        doc="ASCII-armoured signing key of that repository, dearmored into `/etc/apt/keyrings/rocm.gpg`.",
    )
    rocm_repo_key_fingerprint: Fingerprint = var(
        "CA8BB4727A47B4D09B4EE8969386B48A1A693C5C",
        "Fingerprint the key at rocm_repo_key_url must have before apt trusts it (AMD's ROCm release signing "
        "key).",
        valid="the OpenPGP fingerprint of the repository's signing key as 40 hex digits (spaces allowed), "
              "such as AMD's 'CA8B B472 7A47 B4D0 9B4E E896 9386 B48A 1A69 3C5C'",
        doc="The OpenPGP fingerprint the key at `rocm_repo_key_url` must have (AMD's ROCm release signing "
            "key). The key is fetched aside, and installed only when it holds exactly one primary key with "
            "this fingerprint: a key swapped on the way, or one more key added to the file, stops the step "
            "with both fingerprints before apt trusts anything.",
    )
    rocm_tarball_url: HttpUrl | None = var(
        None,
        'TheRock tarball to install when rocm_source is "therock".',
        valid="an http:// or https:// URL of a TheRock tarball, or None (required when rocm_source is "
              "'therock')",
        doc='URL of the TheRock tarball; required when `rocm_source` is `"therock"`.',
    )
    rocm_tarball_sha256: Sha256 | None = var(
        None,
        'sha256 of that tarball, checked before it is unpacked (required with "therock").',
        valid="the sha256 of the tarball as 64 hex digits, or None (required when rocm_source is 'therock')",
        doc="sha256 of that tarball (64 hex digits), checked before anything is unpacked; required with "
            '`"therock"`.',
    )
    rocm_packages_extra: list[PackageName ] = var(
        [],
        'More packages installed with ROCm, e.g. ["rocm-smi"].',
        valid="a list of package names such as ['rocm-smi'] (never amdgpu-dkms or its firmware: its firmware "
              "package has shipped the MES 0x83 that hangs gfx1151)",
        doc='More packages installed with ROCm, e.g. `["rocm-smi"]` (never `amdgpu-dkms*`).',
    )

    # llama-server (head; deploys/head.py)
    head_port: Port = var(
        8080,
        "TCP port of llama-server.",
        valid="a TCP port number from 1 to 65535",
        doc="TCP port of llama-server on hosts in group `head`; must differ from `rpc_port` on a host that is"
            " both.",
    )
    head_bind_address: BindAddress = var(
        None,
        "Address llama-server binds; None = the host's rpc_bind_address if set, else 127.0.0.1.",
        valid="an IPv4 or IPv6 address (not a host name; a link-local IPv6 address with its interface such "
              "as 'fe80::11%eth1'), or None for the host's rpc_bind_address if set, else 127.0.0.1",
        doc="IP address llama-server binds; `None` = the host's `rpc_bind_address` if set, else `127.0.0.1`.",
    )
    head_gpu_layers: Annotated[int, Strict(), Field(ge=0, le=100000)] | Literal["all", "auto"] = var(
        "all",
        'Layers offloaded to the GPU and the RPC servers: "all", "auto" or a number (-ngl).',
        valid="'all', 'auto' or a whole number of layers from 0 to 100000 to offload",
        doc='Layers llama-server offloads to the head\'s GPU and the RPC servers (`-ngl`): `"all"`, `"auto"` '
            "or a number.",
    )
    head_flash_attn: Literal["on", "off", "auto"] = var(
        "on",
        'Flash attention: "on", "off" or "auto" (-fa).',
        valid="one of 'on', 'off' or 'auto'",
        doc='Flash attention (`-fa`): `"on"`, `"off"` or `"auto"`.',
    )
    head_ctx_size: Annotated[int, Strict(), Field(ge=0, le=16_777_216)] = var(
        16384,
        "Context size in tokens for all slots together; 0 = the model's own (-c).",
        valid="a whole number of tokens from 0 (the model's own) to 16777216",
        doc="Context size in tokens for all slots together (`-c`); `0` = the model's own.",
    )
    head_parallel: Annotated[int, Strict(), Field(ge=1, le=256)] = var(
        1,
        "Parallel server slots, each gets head_ctx_size / head_parallel tokens (-np).",
        valid="a whole number of server slots from 1 to 256",
        doc="Parallel server slots (`-np`), 1 to 256; each gets `head_ctx_size / head_parallel` tokens.",
    )
    head_cache_type_k: KvCacheType = var(
        "f16",
        "KV cache type of K: f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1 (-ctk).",
        valid="one of 'f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'iq4_nl', 'q5_0', 'q5_1'",
        doc="KV cache type of K (`-ctk`): `f32`, `f16`, `bf16`, `q8_0`, `q4_0`, `q4_1`, `iq4_nl`, `q5_0`, "
            "`q5_1`.",
    )
    head_cache_type_v: KvCacheType = var(
        "f16",
        "KV cache type of V, same choices (-ctv).",
        valid="one of 'f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'iq4_nl', 'q5_0', 'q5_1'",
        doc="KV cache type of V (`-ctv`), same choices.",
    )
    head_tensor_split: Annotated[list[Annotated[float, Strict(), Field(ge=0)]], Field(min_length=1)] | None = var(
        None,
        "Proportions per device, --rpc servers first then the head's GPU, e.g. [1, 1, 2]; None = llama.cpp's "
        "split (-ts).",
        valid="a list of non-negative proportions such as [3, 1, 1], at least one above 0 (one per device: "
              "the --rpc servers in inventory order, then the head's own GPU), or None for llama.cpp's split",
        doc="Proportions of the model per device (`-ts`), in llama.cpp's device order: the `--rpc` servers "
            "(inventory order), then the head's own GPU; e.g. `[1, 1, 2]`. `None` = llama.cpp splits by free "
            "memory.",
    )
    head_metrics: Annotated[bool, Strict()] = var(
        True,
        "Prometheus metrics on /metrics (--metrics).",
        valid="True (serve Prometheus metrics on /metrics) or False",
        doc="Serve Prometheus metrics on `/metrics` (`--metrics`).",
    )
    head_log_verbosity: Annotated[int, Strict(), Field(ge=0, le=5)] = var(
        4,
        "Log verbosity 0-5; 4 logs at load where each model and KV buffer went (RPC0[host:port] ...).",
        valid="a whole number from 0 (errors only) to 5 (debug); 4 logs where each buffer went",
        doc="llama-server log verbosity 0 to 5; 4 logs at load where each model and KV buffer went "
            "(`RPC0[10.151.0.12:50052] model buffer size = ...`), 3 is quieter per request.",
    )
    head_api_key_file: AbsPath | None = var(
        None,
        "Root-only file on the head with the API key(s), one per line; None = no key (--api-key-file).",
        valid="an absolute path of a root-only file on the head holding the API key(s), or None",
        doc="Root-only file on the head with the API key(s), one per line (`--api-key-file`); systemd hands "
            "it to the unprivileged service as a credential, so the key is in no unit, environment or command"
            " line. Create it before the run; `/health` stays open.",
    )
    head_ready_timeout_s: Annotated[int, Strict(), Field(ge=10, le=86400)] = var(
        600,
        "Seconds to wait for GET /health to answer 200 after a (re)start.",
        valid="a whole number of seconds from 10 to 86400",
        doc="Seconds to wait, after a (re)start, for `GET /health` to answer 200 (the model is loaded); then "
            "the step fails with the service's last journal lines.",
    )
    # llama-server tuning (deploys/serving.py)
    head_alias: Alias | None = var(
        None,
        'Model name the API shows and accepts, e.g. "qwen3-235b"; None = the model file\'s path (-a).',
        valid="a model name for the API such as 'qwen3-235b' (letters, digits and . _ : / @ + -, at most 128,"
              " no commas), or None for the model file's path",
        doc="Model name the API shows in `/v1/models` and accepts (`-a`, `LLAMA_ARG_ALIAS`); `None` = the "
            "model file's path.",
    )
    head_jinja: Annotated[bool, Strict()] | None = var(
        None,
        "True = --jinja (the chat template runs in llama.cpp's Jinja engine), False = --no-jinja.",
        valid="True (--jinja: the chat template runs in llama.cpp's Jinja engine), False (--no-jinja) or None",
        doc="`True`: chat templates run in llama.cpp's Jinja engine (`--jinja`, `LLAMA_ARG_JINJA`), `False`: "
            "`--no-jinja`; `None` = the build's default.",
    )
    head_chat_template_file: AbsPath | None = var(
        None,
        "Jinja chat template file on the head, instead of the model's own (--chat-template-file).",
        valid="an absolute path of a Jinja chat template file on the head, such as '/srv/models/chat.jinja', "
              "or None for the template in the model's metadata",
        doc="Jinja chat template file on the head used instead of the model's own (`--chat-template-file`); "
            "must exist before the run.",
    )
    head_batch_size: Annotated[int, Strict(), Field(ge=1, le=1_048_576)] | None = var(
        None,
        "Logical batch size in tokens (-b).",
        valid="a whole number of tokens from 1 to 1048576 (-b), or None for llama.cpp's default",
        doc="Logical batch size in tokens, 1 to 1048576 (`-b`, `LLAMA_ARG_BATCH`); `None` = llama.cpp's "
            "default.",
    )
    head_ubatch_size: Annotated[int, Strict(), Field(ge=1, le=1_048_576)] | None = var(
        None,
        "Physical batch size in tokens, at most head_batch_size (-ub).",
        valid="a whole number of tokens from 1 to 1048576 (-ub), at most head_batch_size, or None for "
              "llama.cpp's default",
        doc="Physical batch size, at most `head_batch_size` (`-ub`, `LLAMA_ARG_UBATCH`).",
    )
    head_temperature: Annotated[float, Strict(), Field(ge=0, le=10)] | None = var(
        None,
        "Default sampling temperature of requests that set none (--temp).",
        valid="a number from 0 to 10 (--temp), or None for llama.cpp's default",
        doc="Default temperature 0 to 10 for requests that set none (`--temp`, `LLAMA_ARG_TEMPERATURE`).",
    )
    head_top_p: Annotated[float, Strict(), Field(ge=0, le=1)] | None = var(
        None,
        "Default top-p, 1 = off (--top-p).",
        valid="a number from 0 to 1 (--top-p; 1 = off), or None for llama.cpp's default",
        doc="Default top-p 0 to 1, 1 = off (`--top-p`, `LLAMA_ARG_TOP_P`).",
    )
    head_top_k: Annotated[int, Strict(), Field(ge=0, le=1_000_000)] | None = var(
        None,
        "Default top-k, 0 = off (--top-k).",
        valid="a whole number from 0 to 1000000 (--top-k; 0 = off), or None for llama.cpp's default",
        doc="Default top-k, 0 = off (`--top-k`, `LLAMA_ARG_TOP_K`).",
    )
    head_min_p: Annotated[float, Strict(), Field(ge=0, le=1)] | None = var(
        None,
        "Default min-p, 0 = off (--min-p).",
        valid="a number from 0 to 1 (--min-p; 0 = off), or None for llama.cpp's default",
        doc="Default min-p 0 to 1, 0 = off (`--min-p`, `LLAMA_ARG_MIN_P`).",
    )
    head_warmup: Annotated[bool, Strict()] = var(
        True,
        "False = --no-warmup: no empty run at start (faster start, slower first request).",
        valid="True (an empty run at start) or False (--no-warmup: the first request warms up)",
        doc="`False` passes `--no-warmup` (no empty run at start); llama.cpp has no `LLAMA_ARG_*` for it, so "
            "it is an argument.",
    )
    head_override_tensor: list[OverrideTensor] = var(
        [],
        'Tensor overrides "<name regex>=<buffer type>", e.g. ["blk\\\\.[0-9]+\\\\.ffn_.*_exps\\\\.=CPU"] (-ot).',
        valid="a list of tensor overrides such as ['blk\\\\.[0-9]+\\\\.ffn_.*_exps\\\\.=CPU'] ('<tensor name "
              "regex>=<buffer type>', -ot; no spaces, quotes, commas or $ % ; & < > `)",
        doc='Tensor overrides `"<name regex>=<buffer type>"` (`-ot`, `LLAMA_ARG_OVERRIDE_TENSOR`), e.g. '
            '`["blk\\\\.[0-9]+\\\\.ffn_.*_exps\\\\.=CPU"]` keeps MoE experts in RAM.',
    )
    head_fit: Literal["on", "off"] | None = var(
        None,
        '"on"/"off": llama.cpp lowers unset settings until the model fits (--fit; builds that have it).',
        valid="'on' or 'off' (--fit: llama.cpp lowers unset settings until the model fits the devices; needs "
              "a build that has --fit), or None for the build's default",
        doc='`"on"`/`"off"`: llama.cpp lowers unset settings (context, layers) until the model fits the '
            "devices (`--fit`, `LLAMA_ARG_FIT`); refused before a restart when the build lacks `--fit`.",
    )
    head_fit_target_mib: Annotated[int, Strict(), Field(ge=0, le=1_048_576)] | None = var(
        None,
        "MiB each device keeps free under --fit (-fitt).",
        valid="a whole number of MiB from 0 to 1048576 each device keeps free under --fit (-fitt), or None",
        doc="MiB each device keeps free under `--fit` (`-fitt`, `LLAMA_ARG_FIT_TARGET`).",
    )
    head_fit_ctx: Annotated[int, Strict(), Field(ge=0, le=16_777_216)] | None = var(
        None,
        "Smallest context --fit may choose (-fitc).",
        valid="a whole number of tokens from 0 to 16777216, the smallest context --fit may choose (-fitc), or"
              " None",
        doc="Smallest context `--fit` may choose (`-fitc`, `LLAMA_ARG_FIT_CTX`).",
    )
    head_extra_args: list[ExtraArg] = var(
        [],
        'Further llama-server arguments, e.g. ["--cache-reuse", "256"]; none a head_ variable sets.',
        valid="a list of further llama-server arguments such as ['--cache-reuse', '256'] (an option first; no"
              " spaces, quotes, backslashes or $ % ; & < > ` #; none that a head_ variable or model_path "
              "sets)",
        doc='More llama-server arguments, e.g. `["--cache-reuse", "256"]`: an option first, each checked '
            "against the build's `--help` before a restart; none that another variable sets, no spaces or "
            "shell characters.",
    )
    # fit check and the fewest RPC servers (deploys/fit.py)
    head_fit_check: Literal["on", "warn", "off"] = var(
        "on",
        'Before a (re)start: "on" fails when the model cannot fit the devices\' GTT, "warn" only says so, '
        '"off".',
        valid="'on' (fail before a restart when the model cannot fit the devices), 'warn' (only say so) or "
              "'off'",
        doc="Before llama-server (re)starts, estimate weights (file sizes) + KV cache (GGUF metadata) + "
            'compute against each device\'s GTT + VRAM carve-out (head GPU and every RPC server); `"on"` fails'
            ' with the numbers per device and the fixes, `"warn"` only says so, `"off"` skips it. Warns above'
            " 90 %. Where the build has llama.cpp's own fitter (`llama-fit-params`), its estimate and fit are "
            "reported beside ours, with where the two differ (run before llama-server starts).",
    )
    head_fit_reserve_mib: Annotated[int, Strict(), Field(ge=0, le=1_048_576)] = var(
        1024,
        "MiB the fit check keeps free on each device (runtime, OS).",
        valid="a whole number of MiB from 0 to 1048576 kept free on each device by the fit check",
        doc="MiB the fit check keeps free on each device for the runtime and the OS.",
    )
    head_rpc_servers: Literal["all", "auto"] = var(
        "all",
        '"all" RPC servers of the inventory, or "auto": the fewest the model fits on, in inventory order.',
        valid="'all' (every RPC server of the inventory) or 'auto' (the fewest, in inventory order, the model"
              " fits on; not with head_tensor_split)",
        doc='`"all"`: every RPC server of the inventory in `--rpc`; `"auto"`: only the fewest, in inventory '
            "order, the model fits on (each added node costs token speed), the others left idle. Not with "
            "`head_tensor_split`.",
    )
    head_env: EnvVars = var(
        {},
        'Environment of llama-server, e.g. {"ROCBLAS_USE_HIPBLASLT": "1"}; none set by default.',
        valid="a dict of environment variables for llama-server, such as {'ROCBLAS_USE_HIPBLASLT': '1'} "
              "(names: a letter or '_' first, then letters, digits or '_'; values: strings without newlines, "
              "NULs or other control characters, at most 4096 characters)",
        doc="Environment variables of llama-server on the head, names to strings, e.g. "
            '`{"ROCBLAS_USE_HIPBLASLT": "1"}`. Written quoted into its root-only '
            "`/etc/halo-provision/llama-server.env`; a change restarts llama-server only. `LLAMA_ARG_*` names"
            " (llama-server's flags: the step writes them from the `head_*` and `model_*` variables) and "
            "`MESA_SHADER_CACHE_DIR` are refused, naming the variable to set instead. Nothing set by default,"
            " on purpose: not `HSA_OVERRIDE_GFX_VERSION` nor `GGML_CUDA_ENABLE_UNIFIED_MEMORY` (see "
            "`rpc_env`).",
    )

    # the model llama-server serves (head; deploys/head.py)
    model_path: AbsPath | None = var(
        None,
        "GGUF file on the head; or leave None and set model_url and model_sha256.",
        valid="an absolute path of a GGUF file on the head, such as '/srv/models/model.gguf', or None",
        doc="GGUF file on the head that llama-server serves; or leave `None` and set `model_url`.",
    )
    model_url: HttpUrl | None = var(
        None,
        "URL of a GGUF file, downloaded once into model_dir (checked against model_sha256 first).",
        valid="an http:// or https:// URL of a GGUF file, or None",
        doc="http(s) URL of a GGUF file, downloaded once into `model_dir` and checked against `model_sha256` "
            "before llama-server uses it.",
    )
    model_sha256: Sha256 | None = var(
        None,
        "sha256 of the file at model_url (64 hex digits).",
        valid="the sha256 of the file at model_url as 64 hex digits, or None",
        doc="sha256 of the file at `model_url` (64 hex digits); required with `model_url`.",
    )
    model_files: list[ModelFile] = var(
        [],
        'A split GGUF model, every part in order: [{"url": ".../m-00001-of-00002.gguf", "sha256": "..."}, '
        "...].",
        valid="a list of the parts of a split GGUF model in order, each {'url': "
              "'https://.../m-00001-of-00002.gguf', 'sha256': '<64 hex digits>'} or {'hf': "
              "'owner/repo/path/m-00001-of-00002.gguf', 'sha256': ...} (http or https; names "
              "'<name>-0000i-of-0000N.gguf', every part once), or [] (then model_path or model_url)",
        doc='A split GGUF model (`name-00001-of-00003.gguf` ...): every part in order, each `{"url": ..., '
            '"sha256": ...}`; each part is downloaded into `model_dir` and checked against its own sha256, '
            "and llama-server is given the first. Downloads (also `model_url`) resume after an interruption, "
            "check free disk space first, and print a progress line (bytes, total, rate) at least every 30 s."
            " Instead of `model_path`/`model_url`.",
    )
    model_hf_endpoint: HttpUrl = var(
        "https://huggingface.co",
        'Base URL of the Hugging Face hub for model_files entries given as {"hf": "owner/repo/path.gguf", '
        "...}.",
        valid="the http:// or https:// base URL of the Hugging Face hub, such as 'https://huggingface.co'",
        doc='Hub for `model_files` entries given as `{"hf": "owner/repo/path/name-00001-of-00003.gguf", '
            '"sha256": ...}`: they download from '
            "`<endpoint>/<owner>/<repo>/resolve/<model_hf_revision>/<path>`, still checked by their sha256.",
    )
    model_hf_revision: GitRef = var(
        "main",
        "Branch, tag or commit of those repositories.",
        valid="a branch, tag or commit of the repository, such as 'main'",
        doc="Branch, tag or commit of those repositories.",
    )
    model_hf_token_file: AbsPath | None = var(
        None,
        "Root-only file on the head with a Hugging Face token (gated repositories); None = no token.",
        valid="an absolute path of a root-only file on the head holding a Hugging Face access token (one "
              "line), or None",
        doc="Root-only file on the head with a Hugging Face token for gated repositories; curl reads it when "
            "it runs (never in a URL, a command line, a script or a log) and sends it to the hub only, not to"
            " the host it redirects to.",
    )
    model_dir: AbsPath = var(
        "/var/lib/halo-provision/models",
        "Where downloaded models are kept on the head.",
        valid="an absolute directory path such as '/var/lib/halo-provision/models'",
        doc="Where downloaded models are kept on the head.",
    )

    _host_name: str = PrivateAttr(default="<host>")
    _groups: tuple[str, ...] = PrivateAttr(default=())
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)
    _fix: dict[str, str] = PrivateAttr(default_factory=dict)
    _ssh_hostname: Any = PrivateAttr(default=None)
    _ssh_port: Any = PrivateAttr(default=22)

    @model_validator(mode="after")
    def _cross_field(self) -> Settings:
        issues = host_problems(self)
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
        return endpoint(self.rpc_bind_address, self.rpc_port)

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
            ssh = unmapped(ipaddress.ip_address(str(self._ssh_hostname)))
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
        return [endpoint(address, server.port) for server in self.rpc_servers]

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
        return message(
            self._host_name,
            variable,
            self._shown(variable),
            detail,
            fix or self._fix.get(variable, DEFAULT_FIX),
        )


VARIABLES: tuple[str, ...] = tuple(Settings.model_fields)
LIST_VARIABLES = tuple(v for v, f in Settings.model_fields.items() if "list[" in str(f.annotation))

_unchecked = [v for v, f in Settings.model_fields.items() if not v.startswith(PREFIXES)
              or not isinstance(f.json_schema_extra, dict)]
if _unchecked:  # every variable needs one of our prefixes and its texts: var(default, summary, valid=, doc=)
    raise RuntimeError(f"deploys/settings/model.py: declare with var(...) / add a PREFIXES entry for {_unchecked}")
del _unchecked

# What is valid, per variable: the tail of "... is invalid: expected <this>."
VALID: dict[str, str] = {name: field.json_schema_extra["valid"] for name, field in Settings.model_fields.items()}
