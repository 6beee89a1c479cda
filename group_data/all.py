"""Defaults for every host of a halo-provision cluster.

pyinfra turns each public variable here into host data of all hosts. Override
one for a group in group_data/<group>.py or for one host in the inventory's
host data. deploys/settings.py validates them all (a misspelt name is an error);
README.md documents them.
"""

# --- kernel and firmware ---
# Oldest kernel accepted: older kernels show ROCm only ~15.5 GiB of GTT.
kernel_min_version = "6.16.9"
# Kernel with the gfx1151 stability fixes ROCm 7.2 needs; older kernels get a warning.
kernel_recommended_version = "6.18.4"
# Oldest linux-firmware snapshot (YYYYMMDD) accepted, checked on Fedora.
firmware_min_date = 20260110

# --- unified memory ---
# GiB the GPU may map through TTM/GTT (pages_limit = ttm_gib * 262144); None = RAM - os_reserve_gib.
ttm_gib = None
# GiB of RAM kept for the OS when ttm_gib is None.
os_reserve_gib = 8
# Largest BIOS UMA carve-out (dedicated VRAM) in GiB verify accepts; a larger one starves the OS.
vram_carveout_max_gib = 16

# --- IOMMU ---
# "off" adds amd_iommu=off, "pt" adds iommu=pt, "keep" leaves the kernel command line as is.
iommu_mode = "off"

# --- kernel command line and reboot (deploys/grub.py) ---
# More kernel arguments, "key=value" or "flag", e.g. ["amdgpu.cwsr_enable=0"]; ttm and iommu come from above.
kernel_extra_args = []
# Reboot a host whose running kernel lacks the arguments; False = report "reboot pending".
reboot_allowed = False
# Seconds to wait for a host to come back after that reboot.
reboot_timeout_s = 900

# --- GPU ---
# AMD GPU targets llama.cpp is built for (Radeon 8060S = gfx1151).
gpu_targets = ["gfx1151"]
# Users added to the render and video groups so they can use the GPU.
gpu_users = []

# --- ROCm (deploys/rocm.py; never amdgpu-dkms) ---
# Where ROCm comes from: "distro" (Fedora, Debian 13), "amd-repo" (AMD's apt repo) or "therock" (tarball).
rocm_source = "distro"
# ROCm release for amd-repo (the repository's version directory) and therock (/opt/rocm-<version>).
rocm_version = "7.1.1"
# Base URL of AMD's apt repository; rocm_version is appended.
rocm_repo_url = "https://repo.radeon.com/rocm/apt"
# ASCII-armoured signing key of that repository, dearmored into /etc/apt/keyrings/rocm.gpg.
rocm_repo_key_url = "https://repo.radeon.com/rocm/rocm.gpg.key"
# TheRock tarball to install when rocm_source is "therock".
rocm_tarball_url = None
# sha256 of that tarball, checked before it is unpacked (required with "therock").
rocm_tarball_sha256 = None
# More packages installed with ROCm, e.g. ["rocm-smi"].
rocm_packages_extra = []

# --- llama.cpp RPC server (hosts in group rpc_workers) ---
# TCP port of the RPC server.
rpc_port = 50052
# Address the RPC server binds: each worker sets its cluster-link address in the inventory.
rpc_bind_address = None
# Allow rpc_bind_address 0.0.0.0, :: or a public address (the RPC server has no authentication).
rpc_allow_any_address = False

# --- llama-server (hosts in group head) ---
# TCP port of llama-server.
head_port = 8080
# Address llama-server binds; None = the host's rpc_bind_address if set, else 127.0.0.1.
head_bind_address = None
