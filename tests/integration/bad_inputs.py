"""Broken inventories and group data: each must stop `pyinfra INV deploys/full.py` before any operation.

    case = CASES[0]
    inventory = write_inventory(tmp_path, case, lab_inventory_text, addresses)   # a lab inventory, broken
    pyinfra(str(inventory), "deploys/full.py", *case.cli_args)                  # exits non-zero at prepare

A case changes the lab's inventory (hosts' data, groups) or adds group_data/<group>.py next to it,
and lists what the error must say: `who` is "<host>: <variable> = <value>" as the message shows it,
`fix` a piece of the remedy. Strings may name lab addresses as {halo1}, {halo2}, ... (filled in from
the running lab). The base inventory is valid: the lab's, plus the head's model_path (MODEL_PATH).
tests/unit/test_bad_inputs.py checks the cases that need no facts without the lab.
"""

from __future__ import annotations

import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEAD = "halo1"
MODEL_PATH = "/srv/models/bad-inputs.gguf"  # the base's model; made on the head before the corpus runs
DROP = "<drop>"  # as a host data value: remove that key from the host's data


@dataclass(frozen=True)
class BadInput:
    """One broken input and what its error must say."""

    id: str
    who: str  # "<host>: <variable> = <value>" as the message shows it
    fix: str  # a piece of the fix the message gives
    data: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> data to set (DROP removes)
    groups: dict[str, list[str]] | None = None  # group memberships instead of the lab's
    group_data: dict[str, dict[str, Any]] = field(default_factory=dict)  # group_data/<group>.py files
    cli_args: tuple[str, ...] = ()  # extra pyinfra arguments, e.g. ("--data", "ttm_gib=lots")
    needs_facts: bool = False  # found from the host's facts at prepare time, not from the data alone
    absent: str = ""  # a secret of the input the output must never show


def halo2(**data: Any) -> dict[str, dict[str, Any]]:
    return {"halo2": data}


CASES = [
    # wrong types and ranges
    BadInput("ttm_gib_text", "halo2: ttm_gib = 'lots' is invalid", "whole number of GiB from 1 to 1024",
             halo2(ttm_gib="lots")),
    BadInput("ttm_gib_zero", "halo2: ttm_gib = 0 is invalid", "from 1 to 1024", halo2(ttm_gib=0)),
    BadInput("ttm_gib_above_installed_ram", "halo2: ttm_gib = 200 is invalid",
             "only 128.0 GiB of RAM installed; expected at most 128", halo2(ttm_gib=200), needs_facts=True),
    BadInput("os_reserve_negative", "halo2: os_reserve_gib = -8 is invalid", "from 1 to 64",
             halo2(os_reserve_gib=-8)),
    BadInput("iommu_mode_unknown", "halo2: iommu_mode = 'on' is invalid", "one of 'off'", halo2(iommu_mode="on")),
    BadInput("reboot_allowed_text", "halo2: reboot_allowed = 'yes' is invalid", "True (reboot",
             halo2(reboot_allowed="yes")),
    BadInput("kernel_min_version_word", "halo2: kernel_min_version = 'six' is invalid", "a kernel version",
             halo2(kernel_min_version="six")),
    BadInput("firmware_date_impossible", "halo2: firmware_bad_snapshots = [20261341] is invalid", "YYYYMMDD",
             halo2(firmware_bad_snapshots=[20261341])),
    BadInput("gpu_targets_empty", "halo2: gpu_targets = [] is invalid", "non-empty list", halo2(gpu_targets=[])),
    BadInput("gpu_user_with_space", "halo2: gpu_users = ['alice smith'] is invalid", "Linux user names",
             halo2(gpu_users=["alice smith"])),
    BadInput("kernel_arg_shell", "halo2: kernel_extra_args = ['quiet; reboot'] is invalid", "no spaces, quotes",
             halo2(kernel_extra_args=["quiet; reboot"])),
    BadInput("kernel_arg_sets_ttm", "halo2: kernel_extra_args = ['ttm.pages_limit=1'] is invalid",
             "set ttm_gib instead", halo2(kernel_extra_args=["ttm.pages_limit=1"])),
    BadInput("variable_typo", "halo2: ttm_gb = 120 is not a halo-provision variable", "did you mean ttm_gib?",
             halo2(ttm_gb=120)),
    # llama.cpp build
    BadInput("llama_cpp_ref_shell", "halo2: llama_cpp_ref = 'b10760; curl x | sh' is invalid",
             "a release tag such as 'b10760'", halo2(llama_cpp_ref="b10760; curl x | sh")),
    BadInput("llama_cpp_ref_range", "halo2: llama_cpp_ref = 'b1..b2' is invalid", "a commit hash",
             halo2(llama_cpp_ref="b1..b2")),
    BadInput("llama_cpp_backend_unknown", "halo2: llama_cpp_backend = 'cuda' is invalid",
             "one of 'hip' (ROCm), 'vulkan' or 'cpu'", halo2(llama_cpp_backend="cuda")),
    BadInput("llama_cpp_repo_no_scheme", "halo2: llama_cpp_repo = 'github.com/ggml-org/llama.cpp' is invalid",
             "a git repository URL", halo2(llama_cpp_repo="github.com/ggml-org/llama.cpp")),
    BadInput("llama_cpp_repo_option", "halo2: llama_cpp_repo = '--upload-pack=touch${IFS}/tmp/pwned' is invalid",
             "not an option", halo2(llama_cpp_repo="--upload-pack=touch${IFS}/tmp/pwned")),
    BadInput("llama_cpp_repo_ext_transport", "halo2: llama_cpp_repo = 'ext::sh${IFS}-c${IFS}id' is invalid",
             "no remote helper such as 'ext::'", halo2(llama_cpp_repo="ext::sh${IFS}-c${IFS}id")),
    BadInput("llama_cpp_repo_ssh_host_option", "halo2: llama_cpp_repo = 'ssh://-oProxyCommand=id/x' is invalid",
             "no host starting with '-'", halo2(llama_cpp_repo="ssh://-oProxyCommand=id/x")),
    BadInput("llama_cpp_cmake_rdma", "halo2: llama_cpp_cmake_extra_args = ['-DGGML_RPC_RDMA=ON'] is invalid",
             "set llama_cpp_rpc_rdma = True instead", halo2(llama_cpp_cmake_extra_args=["-DGGML_RPC_RDMA=ON"])),
    BadInput("rocm_distro_on_debian_13", "halo2: rocm_source = 'distro' is invalid",
             "Debian 13's own HIP is 5.7",  # the whole cluster on HIP; AMD's repository on the Debian 12 hosts
             {"halo1": {"llama_cpp_backend": "hip", "rocm_source": "amd-repo"},
              "halo2": {"llama_cpp_backend": "hip", "rocm_source": "distro"},
              "halo3": {"llama_cpp_backend": "hip", "rocm_source": "amd-repo"}}, needs_facts=True),
    BadInput("rocm_therock_without_tarball", "halo2: rocm_tarball_url = None is invalid", "rocm_source is 'therock'",
             halo2(rocm_source="therock")),
    BadInput("rocm_dkms_package", "halo2: rocm_packages_extra = ['amdgpu-dkms'] is invalid",
             "never amdgpu-dkms", halo2(rocm_packages_extra=["amdgpu-dkms"])),
    # RPC workers
    BadInput("rpc_port_negative", "halo2: rpc_port = -1 is invalid", "a TCP port number from 1024 to 65535",
             halo2(rpc_port=-1)),
    BadInput("rpc_port_text", "halo2: rpc_port = '50052' is invalid", "a TCP port number", halo2(rpc_port="50052")),
    BadInput("worker_without_bind_address", "halo3: rpc_bind_address = None is invalid",
             "halo3 is in group rpc_workers", {"halo3": {"rpc_bind_address": DROP}}),
    BadInput("bind_address_host_name", "halo2: rpc_bind_address = 'halo2' is invalid", "not a host name",
             halo2(rpc_bind_address="halo2")),
    BadInput("bind_address_every_interface", "halo2: rpc_bind_address = '0.0.0.0' is invalid",
             "set rpc_allow_any_address = True to accept the risk", halo2(rpc_bind_address="0.0.0.0")),
    BadInput("bind_address_public", "halo2: rpc_bind_address = '8.8.8.8' is invalid",
             "a private cluster-link address", halo2(rpc_bind_address="8.8.8.8")),
    BadInput("bind_address_loopback", "halo2: rpc_bind_address = '127.0.0.1' is invalid",
             "halo2's cluster-link interface", halo2(rpc_bind_address="127.0.0.1")),
    BadInput("two_rpc_servers_one_address_port", "halo3: rpc_bind_address = '{halo2}' is invalid",
             "halo2 already runs an RPC server on {halo2}:50052", {"halo3": {"rpc_bind_address": "{halo2}"}}),
    BadInput("rpc_instances_same_port", "halo2: rpc_instances = [{'port': 50053}, {'port': 50053}] is invalid",
             "each on its own port", halo2(rpc_instances=[{"port": 50053}, {"port": 50053}])),
    BadInput("rpc_instance_unknown_key", "halo2: rpc_instances = [{'port': 50053, 'gpu': 'ROCm0'}] is invalid",
             "optional device", halo2(rpc_instances=[{"port": 50053, "gpu": "ROCm0"}])),
    BadInput("rpc_env_newline", "halo2: rpc_env = {'GGML_VK_VISIBLE_DEVICES': '0\\nRPC_PORT=1'} is invalid",
             "without newlines", halo2(rpc_env={"GGML_VK_VISIBLE_DEVICES": "0\nRPC_PORT=1"})),
    BadInput("rpc_env_sets_the_port", "halo2: rpc_env = {'RPC_PORT': '1'} is invalid",
             "expected no RPC_PORT here", halo2(rpc_env={"RPC_PORT": "1"})),
    # the head
    BadInput("head_env_sets_the_model", "halo1: head_env = {'LLAMA_ARG_MODEL': '/x.gguf'} is invalid",
             "set model_path or model_url instead", {"halo1": {"head_env": {"LLAMA_ARG_MODEL": "/x.gguf"}}}),
    BadInput("head_in_its_own_rpc_list", "halo3: rpc_bind_address = '{halo1}' is invalid",
             "expected halo3's own cluster-link address",
             {"halo3": {"rpc_bind_address": "{halo1}"}}, groups={"head": ["halo1"], "rpc_workers": ["halo2", "halo3"]}),
    BadInput("head_port_is_the_rpc_port", "halo1: head_port = 50052 is invalid",
             "expected a head_port different from every port of rpc_port", {"halo1": {"head_port": 50052}}),
    BadInput("head_port_too_big", "halo1: head_port = 70000 is invalid", "from 1 to 65535",
             {"halo1": {"head_port": 70000}}),
    BadInput("model_path_missing", "halo1: model_path = '/srv/models/missing.gguf' is invalid",
             "copy the GGUF file there", {"halo1": {"model_path": "/srv/models/missing.gguf"}}, needs_facts=True),
    BadInput("model_path_relative", "halo1: model_path = 'models/tiny.gguf' is invalid", "an absolute path",
             {"halo1": {"model_path": "models/tiny.gguf"}}),
    BadInput("model_url_without_sha256", "halo1: model_sha256 = None is invalid", "expected the file's sha256",
             {"halo1": {"model_path": DROP, "model_url": "http://{halo1}/tiny.gguf"}}),
    BadInput("tensor_split_all_zero", "halo1: head_tensor_split = [0, 0] is invalid", "every entry is 0",
             {"halo1": {"head_tensor_split": [0, 0]}}),
    BadInput("workers_without_head", "inventory: group head is empty", "add e.g. head = ['halo1']",
             groups={"head": [], "rpc_workers": ["halo1", "halo2", "halo3"]}),
    # where the value comes from: group data, the command line
    BadInput("group_data_rpc_port_zero", "halo3: rpc_port = 0 is invalid", "Fix it in group_data/rpc_workers.py",
             group_data={"rpc_workers": {"rpc_port": 0}}),
    BadInput("group_data_all_iommu", "halo3: iommu_mode = 'strict' is invalid", "or group_data/all.py.",
             group_data={"all": {"iommu_mode": "strict"}}),
    BadInput("command_line_ttm_gib", "halo3: ttm_gib = 'lots' is invalid", "Fix it in the --data option",
             cli_args=("--data", "ttm_gib=lots")),
    # ports and firewall rules that would hit other services (sshd, llama-server)
    BadInput("rpc_port_ssh", "halo2: rpc_port = 22 is invalid", "the unprivileged RPC server cannot bind a lower one",
             halo2(rpc_port=22)),
    # names that would be silently ignored
    BadInput("unprefixed_api_key_file", "halo1: api_key_file = '/etc/halo-provision/api-key' is not a halo-provision "
             "variable", "llama-server would serve with no API key): did you mean head_api_key_file?",
             {"halo1": {"api_key_file": "/etc/halo-provision/api-key"}}),
    BadInput("group_heads", "inventory: group heads = ['halo1'] is not a halo-provision group",
             "did you mean head?", groups={"heads": ["halo1"], "rpc_workers": ["halo1", "halo2", "halo3"]}),
    # one cluster, one build, one client per RPC server
    BadInput("llama_cpp_ref_differs", "halo2: llama_cpp_ref = 'b9000' is invalid",
             "head halo1 has 'b10760', and llama.cpp's RPC client and servers must run one build",
             halo2(llama_cpp_ref="b9000")),
    BadInput("two_heads_share_an_rpc_server", "halo2: rpc_port = 50052 is invalid",
             "an RPC server serves one client at a time; expected one server per head",
             {"halo3": {"model_path": MODEL_PATH}}, groups={"head": ["halo1", "halo3"],
                                                            "rpc_workers": ["halo1", "halo2", "halo3"]}),
    # paths the hardened units cannot see
    BadInput("model_path_in_tmp", "halo1: model_path = '/tmp/tiny.gguf' is invalid",
             "PrivateTmp=yes gives each service its own empty /tmp", {"halo1": {"model_path": "/tmp/tiny.gguf"}}),
    # kernel arguments that take the GPU off the bus
    BadInput("kernel_arg_nomodeset", "halo2: kernel_extra_args = ['nomodeset'] is invalid",
             "or set kernel_allow_risky_args = True if you mean it", halo2(kernel_extra_args=["nomodeset"])),
    # a list given on the command line
    BadInput("command_line_list_as_string", "halo3: kernel_extra_args = 'quiet' is invalid",
             """e.g. --data 'kernel_extra_args=["quiet"]'""", cli_args=("--data", "kernel_extra_args=quiet")),
]

# Fact-free cases checked by the unit corpus only (tests/unit/test_bad_inputs.py), to keep the lab run short.
UNIT_CASES = [
    # ports
    BadInput("rpc_port_https", "halo2: rpc_port = 443 is invalid", "from 1024 to 65535", halo2(rpc_port=443)),
    BadInput("rpc_port_is_the_ssh_port", "halo2: rpc_port = 2222 is invalid",
             "sshd listens on port 2222 of halo2 (ssh_port)", halo2(rpc_port=2222, ssh_port=2222)),
    BadInput("rpc_instance_on_the_ssh_port", "halo2: rpc_instances = [{'port': 2200}] is invalid",
             "sshd listens on port 2200 of halo2", halo2(rpc_instances=[{"port": 2200}], ssh_port=2200)),
    BadInput("rpc_instance_low_port", "halo2: rpc_instances = [{'port': 80}] is invalid", "port 1024 to 65535",
             halo2(rpc_instances=[{"port": 80}])),
    BadInput("head_port_is_the_ssh_port", "halo1: head_port = 2022 is invalid", "sshd listens on port 2022 of halo1",
             {"halo1": {"head_port": 2022, "ssh_port": 2022}}),
    # names
    BadInput("unprefixed_rpcport", "halo2: rpcport = 50060 is not a halo-provision variable", "did you mean rpc_port?",
             halo2(rpcport=50060)),
    BadInput("upper_case_variable", "halo2: RPC_BIND_ADDRESS = '10.151.0.99' is not a halo-provision variable",
             "did you mean rpc_bind_address?", halo2(RPC_BIND_ADDRESS="10.151.0.99")),
    BadInput("api_key_inline", "halo1: api_key = '<hidden>' is not a halo-provision variable",
             "never the key itself", {"halo1": {"api_key": "sk-live-0123456789abcdef"}}, absent="sk-live-0123456789"),
    BadInput("head_api_key_inline", "halo1: head_api_key = '<hidden>' is not a halo-provision variable",
             "did you mean head_api_key_file?", {"halo1": {"head_api_key": "sk-live-0123456789abcdef"}},
             absent="sk-live-0123456789"),
    BadInput("group_rpc_worker", "inventory: group rpc_worker = ['halo2', 'halo3'] is not a halo-provision group",
             "did you mean rpc_workers?", groups={"head": ["halo1"], "rpc_workers": ["halo1"],
                                                  "rpc_worker": ["halo2", "halo3"]}),
    BadInput("group_rpcworkers", "inventory: group rpcworkers = ['halo3'] is not a halo-provision group",
             "rename rpcworkers to rpc_workers", groups={"head": ["halo1"], "rpc_workers": ["halo1", "halo2"],
                                                         "rpcworkers": ["halo3"]}),
    # one cluster
    BadInput("llama_cpp_backend_differs", "halo3: llama_cpp_backend = 'vulkan' is invalid", "head halo1 has 'cpu'",
             {"halo3": {"llama_cpp_backend": "vulkan"}}),
    BadInput("cmake_flags_differ", "halo2: llama_cpp_cmake_extra_args = ['-DGGML_HIP_NO_VMM=ON'] is invalid",
             "head halo1 has []", halo2(llama_cpp_cmake_extra_args=["-DGGML_HIP_NO_VMM=ON"])),
    BadInput("rpc_server_for_an_unknown_head", "halo2: rpc_instances = [{'port': 50052, 'head': 'halo9'}] is invalid",
             "is for head 'halo9', which is not in group head", halo2(rpc_instances=[{"port": 50052, "head": "halo9"}])),
    BadInput("any_address_without_an_address_to_connect_to", "halo2: rpc_bind_address = '0.0.0.0' is invalid",
             "the heads need one of halo2's addresses to connect to (never 0.0.0.0)",
             halo2(rpc_bind_address="0.0.0.0", rpc_allow_any_address=True, ssh_hostname="halo2.lan")),
    BadInput("ipv6_link_local_without_scope", "halo2: rpc_bind_address = 'fe80::12' is invalid",
             "expected it with its interface, such as 'fe80::12%eth1'", halo2(rpc_bind_address="fe80::12")),
    BadInput("ipv4_mapped_duplicate", "halo3: rpc_bind_address = '::ffff:{halo2}' is invalid",
             "halo2 already runs an RPC server on {halo2}:50052", {"halo3": {"rpc_bind_address": "::ffff:{halo2}"}}),
    BadInput("ipv4_mapped_public", "halo2: rpc_bind_address = '::ffff:8.8.8.8' is invalid",
             "a private cluster-link address", halo2(rpc_bind_address="::ffff:8.8.8.8")),
    BadInput("ipv6_worker_for_an_ipv4_client", "halo2: rpc_bind_address = 'fd51::12' is invalid",
             "connects over IPv4 only", halo2(rpc_bind_address="fd51::12")),
    # paths
    BadInput("llama_cpp_prefix_in_home", "halo2: llama_cpp_prefix = '/home/alice/llama.cpp' is invalid",
             "ProtectHome=yes hides every home directory", halo2(llama_cpp_prefix="/home/alice/llama.cpp")),
    BadInput("llama_cpp_prefix_dotdot_to_tmp", "halo2: llama_cpp_prefix = '/opt/../tmp/llama.cpp' is invalid",
             "its own empty /tmp", halo2(llama_cpp_prefix="/opt/../tmp/llama.cpp")),
    BadInput("model_dir_in_root", "halo1: model_dir = '/root/models' is invalid", "readable by root only",
             {"halo1": {"model_dir": "/root/models"}}),
    BadInput("model_path_in_var_tmp", "halo1: model_path = '/var/tmp/m.gguf' is invalid", "own empty /var/tmp",
             {"halo1": {"model_path": "/var/tmp/m.gguf"}}),
    # kernel arguments
    BadInput("kernel_arg_systemd_unit", "halo2: kernel_extra_args = ['systemd.unit=rescue.target'] is invalid",
             "no network, no sshd", halo2(kernel_extra_args=["systemd.unit=rescue.target"])),
    BadInput("kernel_arg_init", "halo2: kernel_extra_args = ['init=/bin/sh'] is invalid", "replaces systemd as PID 1",
             halo2(kernel_extra_args=["init=/bin/sh"])),
    BadInput("kernel_arg_blacklist_amdgpu", "halo2: kernel_extra_args = ['modprobe.blacklist=nouveau,amdgpu'] is "
             "invalid", "keeps amdgpu from loading", halo2(kernel_extra_args=["modprobe.blacklist=nouveau,amdgpu"])),
    BadInput("kernel_arg_rd_blacklist_amdgpu", "halo2: kernel_extra_args = ['rd.driver.blacklist=amdgpu'] is invalid",
             "keeps amdgpu from loading", halo2(kernel_extra_args=["rd.driver.blacklist=amdgpu"])),
    BadInput("kernel_arg_gttsize", "halo2: kernel_extra_args = ['amdgpu.gttsize=122880'] is invalid",
             "fights ttm.pages_limit", halo2(kernel_extra_args=["amdgpu.gttsize=122880"])),
    BadInput("kernel_arg_ifnames", "halo2: kernel_extra_args = ['net.ifnames=0'] is invalid",
             "off the network", halo2(kernel_extra_args=["net.ifnames=0"])),
    # secrets in messages, lists on the command line
    BadInput("model_url_password_masked", "halo1: model_url = 'ftp://alice:***@{halo1}/tiny.gguf' is invalid",
             "an http:// or https:// URL", {"halo1": {"model_path": DROP, "model_url": "ftp://alice:s3cr3t@{halo1}/tiny.gguf",
                                                      "model_sha256": "0" * 64}}, absent="s3cr3t"),
    BadInput("repo_token_masked", "halo2: llama_cpp_repo = 'https://***@github.com/o/llama.cpp x' is invalid",
             "a git repository URL", halo2(llama_cpp_repo="https://ghp_0123456789abcdefghijklmnopqrstuvwxyz@github.com/o/"
                                           "llama.cpp x"), absent="ghp_0123"),
    BadInput("rocm_repo_url_token_masked", "halo2: rocm_repo_url = 'ftp://repo.example/apt?token=***' is invalid",
             "an http:// or https:// URL", halo2(rocm_repo_url="ftp://repo.example/apt?token=abc0def1"),
             absent="abc0def1"),
    BadInput("command_line_gpu_targets", "halo3: gpu_targets = 'gfx1151' is invalid",
             """--data 'gpu_targets=["gfx1151"]'""", cli_args=("--data", "gpu_targets=gfx1151")),
    BadInput("command_line_tensor_split", "halo1: head_tensor_split = '1,1' is invalid",
             "--data 'head_tensor_split=[1, 1]'", cli_args=("--data", "head_tensor_split=1,1")),
    BadInput("command_line_number_for_a_list", "halo3: gpu_users = 1000 is invalid",
             "as a number, not a list", cli_args=("--data", "gpu_users=1000")),
]


def fill(value: Any, addresses: dict[str, str]) -> Any:
    """`value` with {halo1}, {halo2}... in its strings replaced by the lab hosts' addresses."""
    if isinstance(value, str):
        for name, address in addresses.items():
            value = value.replace("{" + name + "}", address)
        return value
    if isinstance(value, dict):
        return {k: fill(v, addresses) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, addresses) for v in value]
    return value


def lab_hosts_data(lab_inventory: str) -> tuple[dict[str, dict], list[str]]:
    """{host: data} and the head list of the lab's inventory file."""
    module = runpy.run_path(lab_inventory)
    return {name: dict(data) for name, data in module["rpc_workers"]}, list(module["head"])


def base_hosts(lab_inventory: str) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """The valid base: the lab's hosts and groups with the CPU backend (the HIP backend is refused
    on Debian 12 and 13 with rocm_source 'distro': a case of its own), the head with model_path = MODEL_PATH."""
    hosts, head = lab_hosts_data(lab_inventory)
    for data in hosts.values():
        data["llama_cpp_backend"] = "cpu"
    hosts[HEAD]["model_path"] = MODEL_PATH
    return hosts, {"head": head, "rpc_workers": list(hosts)}


def write_inventory(directory: Path, case: BadInput | None, lab_inventory: str, addresses: dict[str, str]) -> Path:
    """directory/inventory.py (and directory/group_data/*.py) for `case`; None writes the valid base."""
    hosts, groups = base_hosts(lab_inventory)
    if case is not None:
        for name, data in fill(case.data, addresses).items():
            for key, value in data.items():
                if value == DROP:
                    hosts[name].pop(key, None)
                else:
                    hosts[name][key] = value
        groups = case.groups if case.groups is not None else groups
        group_dir = directory / "group_data"
        for group, data in fill(case.group_data, addresses).items():
            group_dir.mkdir(exist_ok=True)
            (group_dir / f"{group}.py").write_text("".join(f"{k} = {v!r}\n" for k, v in data.items()))
    lines = ['"""A broken lab inventory (tests/integration/bad_inputs.py)."""', ""]
    lines += ["all = ["] + [f"    {(name, data)!r}," for name, data in hosts.items()] + ["]"]
    lines += [f"{group} = {members!r}" for group, members in groups.items()]
    path = directory / "inventory.py"
    path.write_text("\n".join(lines) + "\n")
    return path
