"""Defaults for every host of a halo-provision cluster.

pyinfra turns each public variable here into host data of all hosts. Override
one for a group in group_data/<group>.py or for one host in the inventory's
host data. deploys/settings/ validates them all (a misspelt name is an error).
Each comment is its variable's summary in deploys/settings/model.py, README's
table its description: after changing one there, run python -m deploys.settings.docs.
"""

# --- kernel and firmware ---
# Oldest kernel accepted: older kernels show ROCm only ~15.5 GiB of GTT.
kernel_min_version = "6.16.9"
# Kernel with the gfx1151 stability fixes ROCm 7.2 needs; older kernels get a warning.
kernel_recommended_version = "6.18.4"
# Oldest Ubuntu OEM kernel (-oem flavour) accepted, version-ABI: AMD supports gfx1151 from 6.14.0-1018-oem.
kernel_oem_min_version = "6.14.0-1018"
# linux-firmware snapshots (YYYYMMDD) that fail a Fedora host: 20251125 ships MES 0x83, which hangs gfx1151.
firmware_bad_snapshots = [20251125]

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
# Allow kernel_extra_args that may take a host off the network or the GPU off the bus (init=, nomodeset...).
kernel_allow_risky_args = False
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
# Where ROCm comes from: "distro" (Fedora, Debian testing), "amd-repo" (AMD's apt repo) or "therock" (tarball).
rocm_source = "distro"
# ROCm release for amd-repo and therock; AMD supports Strix Halo with 7.2.x on kernels >= 6.18.4 (not 7.1.x).
rocm_version = "7.2.1"
# Base URL of AMD's apt repository; rocm_version is appended.
rocm_repo_url = "https://repo.radeon.com/rocm/apt"
# ASCII-armoured signing key of that repository, dearmored into /etc/apt/keyrings/rocm.gpg.
rocm_repo_key_url = "https://repo.radeon.com/rocm/rocm.gpg.key"
# Fingerprint the key at rocm_repo_key_url must have before apt trusts it (AMD's ROCm release signing key).
rocm_repo_key_fingerprint = "CA8BB4727A47B4D09B4EE8969386B48A1A693C5C"
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
# RPC servers of this worker, e.g. [{"port": 50052, "device": "ROCm0", "threads": 8}]; [] = one on rpc_port.
rpc_instances = []
# Environment of the RPC servers, e.g. {"GGML_VK_VISIBLE_DEVICES": "0"}; an instance's "env" goes over it.
rpc_env = {}
# Most MiB the RPC tensor cache (-c, /var/lib/halo-rpc/rpc) keeps, least recently used pruned first;
# 0 = no cache; None = a tenth of the file system that holds it.
rpc_cache_max_mib = None

# --- llama.cpp build (every host: one commit for the whole cluster) ---
# Git repository of llama.cpp (a URL or a path on the host).
llama_cpp_repo = "https://github.com/ggml-org/llama.cpp"
# Release tag or commit built on every host; RPC client and servers must run the same one.
llama_cpp_ref = "b10760"
# GPU backend: "hip" (ROCm, GPU_TARGETS from gpu_targets), "vulkan" or "cpu"; GGML_RPC is always on.
llama_cpp_backend = "hip"
# Where sources (src/), builds (builds/<commit>-<flags>/) and the `current` link live.
llama_cpp_prefix = "/opt/llama.cpp"
# Build on one host per distro and backend, copy the result to the others (one binary everywhere).
llama_cpp_build_once = True
# Extra CMake settings added to the build, e.g. ["-DGGML_HIP_NO_VMM=ON"]; part of the build's identity.
llama_cpp_cmake_extra_args = []
# Parallel compile jobs; None = all cores of the build host.
llama_cpp_build_jobs = None
# Build ggml-rpc's RDMA transport (libibverbs then needed on every host); False = plain TCP only.
llama_cpp_rpc_rdma = False

# --- llama-server (hosts in group head) ---
# TCP port of llama-server.
head_port = 8080
# Address llama-server binds; None = the host's rpc_bind_address if set, else 127.0.0.1.
head_bind_address = None
# Layers offloaded to the GPU and the RPC servers: "all", "auto" or a number (-ngl).
head_gpu_layers = "all"
# Flash attention: "on", "off" or "auto" (-fa).
head_flash_attn = "on"
# Context size in tokens for all slots together; 0 = the model's own (-c).
head_ctx_size = 16384
# Parallel server slots, each gets head_ctx_size / head_parallel tokens (-np).
head_parallel = 1
# KV cache type of K: f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1 (-ctk).
head_cache_type_k = "f16"
# KV cache type of V, same choices (-ctv).
head_cache_type_v = "f16"
# Proportions per device, --rpc servers first then the head's GPU, e.g. [1, 1, 2]; None = llama.cpp's split (-ts).
head_tensor_split = None
# Prometheus metrics on /metrics (--metrics).
head_metrics = True
# Log verbosity 0-5; 4 logs at load where each model and KV buffer went (RPC0[host:port] ...).
head_log_verbosity = 4
# Root-only file on the head with the API key(s), one per line; None = no key (--api-key-file).
head_api_key_file = None
# Seconds to wait for GET /health to answer 200 after a (re)start.
head_ready_timeout_s = 600
# Environment of llama-server, e.g. {"ROCBLAS_USE_HIPBLASLT": "1"}; none set by default.
head_env = {}

# --- llama-server tuning (hosts in group head; None = llama.cpp's default) ---
# Model name the API shows and accepts, e.g. "qwen3-235b"; None = the model file's path (-a).
head_alias = None
# True = --jinja (the chat template runs in llama.cpp's Jinja engine), False = --no-jinja.
head_jinja = None
# Jinja chat template file on the head, instead of the model's own (--chat-template-file).
head_chat_template_file = None
# Logical batch size in tokens (-b).
head_batch_size = None
# Physical batch size in tokens, at most head_batch_size (-ub).
head_ubatch_size = None
# Default sampling temperature of requests that set none (--temp).
head_temperature = None
# Default top-p, 1 = off (--top-p).
head_top_p = None
# Default top-k, 0 = off (--top-k).
head_top_k = None
# Default min-p, 0 = off (--min-p).
head_min_p = None
# False = --no-warmup: no empty run at start (faster start, slower first request).
head_warmup = True
# Tensor overrides "<name regex>=<buffer type>", e.g. ["blk\\.[0-9]+\\.ffn_.*_exps\\.=CPU"] (-ot).
head_override_tensor = []
# "on"/"off": llama.cpp lowers unset settings until the model fits (--fit; builds that have it).
head_fit = None
# MiB each device keeps free under --fit (-fitt).
head_fit_target_mib = None
# Smallest context --fit may choose (-fitc).
head_fit_ctx = None
# Before a (re)start: "on" fails when the model cannot fit the devices' GTT, "warn" only says so, "off".
head_fit_check = "on"
# MiB the fit check keeps free on each device (runtime, OS).
head_fit_reserve_mib = 1024
# "all" RPC servers of the inventory, or "auto": the fewest the model fits on, in inventory order.
head_rpc_servers = "all"
# Further llama-server arguments, e.g. ["--cache-reuse", "256"]; none a head_ variable sets.
head_extra_args = []

# --- the model llama-server serves (hosts in group head) ---
# GGUF file on the head; or leave None and set model_url and model_sha256.
model_path = None
# URL of a GGUF file, downloaded once into model_dir (checked against model_sha256 first).
model_url = None
# sha256 of the file at model_url (64 hex digits).
model_sha256 = None
# A split GGUF model, every part in order: [{"url": ".../m-00001-of-00002.gguf", "sha256": "..."}, ...].
model_files = []
# Base URL of the Hugging Face hub for model_files entries given as {"hf": "owner/repo/path.gguf", ...}.
model_hf_endpoint = "https://huggingface.co"
# Branch, tag or commit of those repositories.
model_hf_revision = "main"
# Root-only file on the head with a Hugging Face token (gated repositories); None = no token.
model_hf_token_file = None
# Where downloaded models are kept on the head.
model_dir = "/var/lib/halo-provision/models"
