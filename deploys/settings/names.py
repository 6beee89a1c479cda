"""Names in host data: which keys and groups are ours, and what a name that is almost ours should say.

A key with one of our prefixes that is no variable is an error (a typo, or a retired variable); a key
without our prefix that means one of ours is an error when ignoring it would drop security, else a
warning (it may be the user's own data).

    >>> near_miss("rpcport")
    ('rpc_port', True)
    >>> near_miss("model")
    ('model_path', False)
"""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING, Any

from deploys.settings.fields import PREFIXES
from deploys.settings.messages import masked, shown_value
from deploys.settings.model import HEAD_GROUP, RPC_WORKERS_GROUP, VARIABLES, Settings

if TYPE_CHECKING:
    from pyinfra.api import Inventory

# Variables that are gone: name -> what replaced it and why (the error a host with one of them gets).
RETIRED = {
    "firmware_min_date": (
        "it was replaced by firmware_bad_snapshots, a list of known-bad linux-firmware snapshots "
        "(default [20251125]): a minimum date rejected 20251111, the rollback AMD engineers advise after the "
        "20251125 regression, and the loaded MES version is checked wherever debugfs is readable"
    ),
}



def unknown_key_problem(host: str, key: str, value: Any, fix: str) -> str:
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
        f"{host}: {key} = {shown_value(key, value)} is not a halo-provision variable: {hint} "
        f"Fix the name in {fix}."
    )



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


def near_miss(key: str) -> tuple[str, bool] | None:
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


def near_miss_message(host: str, key: str, value: Any, variable: str, error: bool, fix: str) -> str:
    consequence = (
        "it would be ignored" + (" and llama-server would serve with no API key" if variable == "head_api_key_file"
                                 else "")
    )
    if variable == "head_api_key_file" and "file" not in key.lower():
        variable += " (the path of a root-only file on the head holding the key, never the key itself)"
    return masked(
        f"{host}: {key} = {shown_value(key, value)} is not a halo-provision variable ({consequence}): did you "
        f"mean {variable}? "
        + (f"Fix the name in {fix}." if error else f"Rename it in {fix}, or ignore this if {key} is your own data.")
    )



_GROUP_NAMES = (HEAD_GROUP, RPC_WORKERS_GROUP)


def group_problems(inventory: Inventory) -> list[str]:
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

