"""Shell metacharacters through every string-typed variable of the settings model (issue 13, class 1).

Each string a user can write (a field, an entry of a list, a key or value of a dict, a field of an
rpc_instances or model_files entry; found by walking the model's fields, not listed here) gets each
hostile payload. Either the settings refuse it, naming host, variable, value and fix, or every step of
deploys/full.py is prepared for the lab inventory (tests/unit/operations.py) and every command, script
and file that holds the payload holds it as data: in a shell command every character of it reaches the
command quoted (tests/unit/shell_text.py, and again inside each `bash -c` script), in a systemd
environment file it is one double-quoted line that reads back as the value, and no other file
(units, firewall rules, apt sources) holds it at all.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from pyinfra.api import Inventory

from deploys.common import env_file_line
from deploys.settings import Settings, SettingsError, validate_inventory
from tests.unit.operations import GROUPS, HOSTS, REFUSED, plan
from tests.unit.shell_text import data_spans, literal_text, scripts

SENTINEL = "HALOPWN"
PAYLOADS = [
    "$(touch /tmp/HALOPWN)", "$(touch${IFS}/tmp/HALOPWN)", "`touch${IFS}/tmp/HALOPWN`", "$HALOPWN",
    "${HALOPWN}", ";touch${IFS}HALOPWN", "|HALOPWN", "&HALOPWN", "'HALOPWN", '"HALOPWN', "\nHALOPWN",
    "\\HALOPWN", "%HALOPWN", "#HALOPWN", " HALOPWN",
]
STEPS = ["deploys.kernel.check_kernel", "deploys.firmware.check_firmware", "deploys.groups.gpu_groups",
         "deploys.grub.grub_kernel_args", "deploys.rocm.install_rocm", "deploys.llama_cpp.llama_cpp",
         "deploys.firewall.firewall", "deploys.rpc_worker.rpc_worker", "deploys.head.head"]
SHA = "ab" * 32
# The rest of a valid cluster, so that each value reaches the commands that use it.
BASE_DATA = {"llama_cpp_backend": "hip", "rocm_source": "amd-repo", "model_url": "https://example.org/m.gguf",
             "model_sha256": SHA}
# Other values a variable needs to take effect (or to be valid at all).
CONTEXT = {
    "rocm_tarball_url": {"rocm_source": "therock", "rocm_tarball_sha256": SHA},
    "rocm_tarball_sha256": {"rocm_source": "therock", "rocm_tarball_url": "https://example.org/r.tar.gz"},
    "model_path": {"model_url": None, "model_sha256": None},
    "model_files": {"model_url": None, "model_sha256": None},
    "model_hf_endpoint": {"model_url": None, "model_sha256": None,
                          "model_files": [{"hf": "o/r/m-00001-of-00001.gguf", "sha256": SHA}]},
    "model_hf_revision": {"model_url": None, "model_sha256": None,
                          "model_files": [{"hf": "o/r/m-00001-of-00001.gguf", "sha256": SHA}]},
    "model_hf_token_file": {"model_url": None, "model_sha256": None,
                            "model_files": [{"hf": "o/r/m-00001-of-00001.gguf", "sha256": SHA}]},
    "rocm_repo_key_fingerprint": {},
}
# A valid value to put the payload into, where the default is no string (None, [] or {}).
SAMPLES: dict[str, Any] = {
    "kernel_extra_args": ["amdgpu.cwsr_enable=0"], "gpu_users": ["alice"],
    # IPv4 addresses take no payload; an IPv6 address's scope (its interface) is text
    "rpc_bind_address": "fe80::11%eth1", "head_bind_address": "fe80::11%eth1", "rpc_instances": [{"port": 50052, "device": "ROCm0", "head": "halo1",
                                                          "env": {"HALO_X": "1"}}],
    "rpc_env": {"HALO_X": "1"}, "head_env": {"HALO_X": "1"}, "llama_cpp_cmake_extra_args": ["-DGGML_HIP_NO_VMM=ON"],
    "rocm_tarball_url": "https://example.org/r.tar.gz", "rocm_tarball_sha256": SHA,
    "rocm_packages_extra": ["rocm-smi"], "head_api_key_file": "/etc/halo-provision/api-key",
    "head_alias": "tiny", "head_chat_template_file": "/srv/models/chat.jinja",
    "head_override_tensor": ["blk\\.1\\.ffn_.*=CPU"], "head_extra_args": ["--cache-reuse", "256"],
    "model_path": "/srv/models/m.gguf", "model_url": "https://example.org/m.gguf", "model_sha256": SHA,
    "model_files": [{"url": "https://example.org/d/m-00001-of-00002.gguf", "sha256": SHA},
                    {"hf": "o/r/m-00002-of-00002.gguf", "sha256": SHA}],
    "model_hf_token_file": "/etc/halo-provision/hf-token",
}
# Variables set for one host only (the others keep their own): addresses.
ONE_HOST = {"rpc_bind_address": "halo1", "head_bind_address": "halo1"}
FACTS = {
    "Distro": "@debian_12_grub",
    "LlamaServerHelp": {"runs": True, "load_mode": "--load-mode", "api_key_file_env": True},
    "File": {"user": "root", "group": "root", "mode": 600, "size": 37, "mtime": None},
    # a build that `current` points at (the RPC step writes its units and env files for it)
    "LlamaCppInstall": {"current": {"id": "0123456789ab-1a2b3c4d", "commit": "0123456789ab", "ref": "b10760",
                                    "backend": "hip", "flags": [], "rpc_server": "/opt/llama.cpp/current/bin/ggml-rpc-server",
                                    "server": "/opt/llama.cpp/current/bin/llama-server"}, "ref_commit": None},
    "FirewallFrontends": {"firewalld": True, "ufw": True},
    # a GRUB host whose kernel lacks the arguments (the GRUB step edits /etc/default/grub)
    "MemTotal": 134486163456,
    "TtmLimits": {"module": "ttm", "pages_limit": 4063232, "page_pool_size": 4063232},
    "KernelCmdline": [["BOOT_IMAGE", "/vmlinuz"], ["root", "UUID=ab"], ["ro", None], ["quiet", None]],
    "GrubDefault": {"path": "/etc/default/grub", "cfg_args": [["root", "UUID=ab"], ["ro", None], ["quiet", None]],
                    "text": 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\nGRUB_CMDLINE_LINUX=""\n'},
}


def _stringish(annotation: Any) -> bool | type[BaseModel]:
    """Does a user write this type as text (True), or as a dict of a sub-model (the model)?"""
    origin = typing.get_origin(annotation)
    if annotation is str or annotation in (ipaddress.IPv4Address, ipaddress.IPv6Address):
        return True
    if origin is Literal:
        return all(isinstance(a, str) for a in typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if origin is typing.Annotated:
        return _stringish(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return next((r for a in typing.get_args(annotation) if (r := _stringish(a))), False)
    return False


@dataclass(frozen=True)
class Slot:
    """One place a user writes a string: variable, where in its value, and how to put a payload there."""
    variable: str
    where: str
    make: Any  # payload -> the variable's value

    def __str__(self) -> str:
        return f"{self.variable}{self.where}"


def _literals(annotation: Any) -> list[str]:
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    return [v for a in typing.get_args(annotation) for v in _literals(a)]


def _base(variable: str) -> Any:
    """A valid value: the sample, else the default, else the first of a Literal's values."""
    field = Settings.model_fields[variable]
    if variable in SAMPLES:
        return SAMPLES[variable]
    return field.default if field.default is not None else (_literals(field.annotation) or [None])[0]


def _into(base: str, payload: str, position: str) -> str:
    """`payload` at the end of `base`, or before its last '/' (inside a URL's or path's directory)."""
    if position == "end" or "/" not in base:
        return base + payload
    head, _, tail = base.rpartition("/")
    return f"{head}{payload}/{tail}"


def slots() -> list[Slot]:
    """Every string a user writes in the settings, from the model's own fields."""
    found = []
    for variable, field in Settings.model_fields.items():
        annotation = field.annotation
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        base = _base(variable)
        if origin is typing.Annotated:
            origin, args = typing.get_origin(args[0]), typing.get_args(args[0])
        if origin in (typing.Union, types.UnionType):
            inner = [a for a in args if a is not type(None)]
            if len(inner) == 1 and typing.get_origin(inner[0]) in (list, dict, typing.Annotated):
                annotation = inner[0]
                origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is list:
            kind = _stringish(args[0])
            if kind is True:
                found.append(Slot(variable, "[-1]", lambda p, pos, b=base: [*b[:-1], _into(b[-1], p, pos)]))
            elif kind:
                for i, item in enumerate(base):
                    for key in item:
                        sub = kind.model_fields[key].annotation
                        if _stringish(sub) is True:
                            found.append(Slot(variable, f"[{i}].{key}", lambda p, pos, b=base, i=i, k=key: [
                                {**b[i], k: _into(b[i][k], p, pos)}]))
                        elif typing.get_origin(sub) is dict:
                            found.extend(_dict_slots(variable, f"[{i}].{key}", item[key],
                                                     lambda d, b=base, i=i, k=key: [{**b[i], k: d}]))
        elif origin is dict:
            found.extend(_dict_slots(variable, "", base, lambda d: d))
        elif _stringish(annotation) is True:
            assert isinstance(base, str), f"add a sample string value of {variable} to SAMPLES"
            found.append(Slot(variable, "", lambda p, pos, b=base: _into(b, p, pos)))
    return found


def _dict_slots(variable: str, where: str, base: dict, wrap) -> list[Slot]:
    (key, value), = base.items()
    return [Slot(variable, f"{where}[key]", lambda p, pos: wrap({key + p: value})),
            Slot(variable, f"{where}[value]", lambda p, pos: wrap({key: value + p}))]


def test_every_string_variable_has_a_slot():
    covered = {slot.variable for slot in slots()}
    # a second reading of the types, by their text: str, an address, a Literal of strings, a sub-model
    text = re.compile(r"\bstr\b|Address|Literal\['|RpcInstance|ModelFile")
    stringish = {v for v, f in Settings.model_fields.items() if text.search(str(f.annotation))}
    assert stringish <= covered, stringish - covered
    assert len(covered) >= 40


_ENV_LINE = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*="((?:[^"\\`$]|\\["\\`$])*)"$')


def _problems_in(command: str, payloads: list[str]) -> list[str]:
    """Where `command` (a shell command, or 'upload <dest>' and the file's text) lets a payload act;
    `payloads` were put into the value one after the other."""
    joined = "".join(payloads)
    if command.startswith(("python ", "download ")):
        return []  # not run by a shell
    if command.startswith("upload "):
        dest, _, text = command.partition("\n")
        dest = dest.removeprefix("upload ")
        if dest.endswith("/script") or text.startswith("#!"):  # a script bash runs (deploys/progress.py)
            return [f"{dest}: {p}" for p in _problems_in(text, payloads)]
        problems = []
        for line in text.splitlines():
            if SENTINEL not in line:
                continue
            if dest.endswith(".env"):  # a systemd EnvironmentFile: one double-quoted value per line
                match = _ENV_LINE.match(line)
                if match is None or joined not in re.sub(r"\\(.)", r"\1", match[1]):
                    problems.append(f"{dest} holds it as {line!r}")
            elif dest.endswith(".sources"):  # apt's deb822 sources: apt reads it, no shell; one field per line
                if joined not in line:
                    problems.append(f"{dest} holds it as {line!r}")
            else:
                problems.append(f"{dest} holds it as {line!r}")
        return problems
    problems = []
    spans = {payload: data_spans(command, payload) for payload in payloads}
    acted = [payload for payload, found in spans.items() if not all(found)]
    if acted or literal_text(command).count(SENTINEL) != sum(map(len, spans.values())):
        problems.append(f"the shell acts on {acted or 'a part of it'} in {command!r}")
    for script in scripts(command):
        if SENTINEL in script:
            problems += _problems_in(script, payloads)
    return problems


def test_the_check_finds_a_value_spliced_into_shell_text():
    payload = "$(touch /tmp/HALOPWN)"
    assert _problems_in(f"curl -o /m {payload}", [payload])
    assert _problems_in(f"bash -c {shlex.quote(f'url={payload}; curl $url')}", [payload])  # quoted once only
    assert _problems_in(f"cat > /f <<EOF\n{payload}\nEOF\n", [payload])
    assert _problems_in(f'echo "{payload}"', [payload])
    assert _problems_in(f"upload /etc/halo-provision/x.env\nX={payload}\n", [payload])
    assert _problems_in(f"upload /etc/systemd/system/x.service\nExecStart=/bin/x {payload}\n", [payload])
    assert not _problems_in(f"curl -o /m {shlex.quote(payload)}", [payload])
    script = f'url={shlex.quote(payload)}; curl "$url"'
    assert not _problems_in(f"bash -c {shlex.quote(script)}", [payload])
    assert not _problems_in(f"cat > /f <<'EOF'\n{payload}\nEOF\n", [payload])
    assert not _problems_in(f"upload /etc/halo-provision/x.env\n{env_file_line('X', payload)}\n", [payload])
    both = ["'HALOPWN", ";touch${IFS}HALOPWN"]
    assert _problems_in("echo x" + shlex.quote(both[0]) + both[1], both)


def _data(slot: Slot, value: Any) -> tuple[dict, dict]:
    """(every host's data, one host's own) with `value` for the slot's variable."""
    data = {**BASE_DATA, **CONTEXT.get(slot.variable, {})}
    host_data = {}
    if slot.variable in ONE_HOST:
        host_data = {ONE_HOST[slot.variable]: {slot.variable: value}}
    else:
        data[slot.variable] = value
    return {k: v for k, v in data.items() if v is not None}, host_data


def _refusal(slot: Slot, value: Any) -> str | None:
    """The settings' message when they refuse `value`, else None."""
    data, host_data = _data(slot, value)
    hosts = [(name, {**values, **data, **host_data.get(name, {})}) for name, values in HOSTS.items()]
    try:
        validate_inventory(Inventory((hosts, {}), **{g: (members, {}) for g, members in GROUPS.items()}))
    except SettingsError as e:
        return str(e)
    return None


def _run(slot: Slot, value: Any, monkeypatch) -> list:
    """The operations of every step for halo1 (head and RPC worker: every step adds operations there)."""
    data, host_data = _data(slot, value)
    return plan(STEPS, FACTS, host="halo1", data=data, host_data=host_data, monkeypatch=monkeypatch)


def test_the_base_cluster_is_valid_and_reaches_every_step(monkeypatch):
    for variable in [None, *CONTEXT]:
        slot = Slot(variable or "llama_cpp_ref", "", None)
        names = [op.name for op in _run(slot, _base(slot.variable), monkeypatch)]
        assert REFUSED not in names and "Write the llama-server settings" in names, names
        assert "Build llama.cpp" in " ".join(names) and "Write the settings of halo-rpc@50052" in names, names


SLOTS = slots()


@pytest.mark.parametrize("slot", SLOTS, ids=[str(slot) for slot in SLOTS])
def test_a_hostile_value_is_refused_or_reaches_commands_only_as_data(slot, monkeypatch):
    for position in ("end", "dir") if "/" in str(slot.make("", "end")) else ("end",):
        accepted = []
        for payload in PAYLOADS:
            message = _refusal(slot, slot.make(payload, position))
            if message is None:
                accepted.append(payload)
                continue
            line = next(line for line in message.splitlines() if slot.variable in line)
            assert re.match(r"^halo[0-9]: ", line) and " is invalid: " in line and "Fix it in" in line, message
        # what the settings let through goes into one value (or one at a time, if that one is refused)
        runs = [accepted] if _refusal(slot, slot.make("".join(accepted), position)) is None else [[p] for p in accepted]
        for payloads in runs if accepted else []:
            value = slot.make("".join(payloads), position)
            operations = _run(slot, value, monkeypatch)
            assert operations[0].name != REFUSED, operations[0].commands
            problems = [f"{op.name}: {p}" for op in operations for c in op.commands for p in _problems_in(c, payloads)]
            assert not problems, f"{slot.variable} = {value!r}:\n" + "\n".join(problems)
