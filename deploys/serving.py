"""The llama-server settings people tune, as the LLAMA_ARG_* variables llama.cpp reads, and the
arguments that have no such variable; checked against the built binary's --help before a (re)start.

deploys/head.py adds tuning_env(s) to llama-server's environment file and passes ARGS_VARIABLE to
ExecStart (systemd splits `$HALO_LLAMA_SERVER_ARGS` at spaces; the values are validated to have
none). The variable names are those of llama.cpp's common/arg.cpp (`.set_env(...)`):

| variable | flag | LLAMA_ARG_* |
|---|---|---|
| head_alias | -a | LLAMA_ARG_ALIAS |
| head_jinja | --jinja / --no-jinja | LLAMA_ARG_JINJA |
| head_chat_template_file | --chat-template-file | LLAMA_ARG_CHAT_TEMPLATE_FILE |
| head_batch_size, head_ubatch_size | -b, -ub | LLAMA_ARG_BATCH, LLAMA_ARG_UBATCH |
| head_temperature, head_top_p, head_top_k, head_min_p | --temp, --top-p, --top-k, --min-p | LLAMA_ARG_TEMPERATURE, _TOP_P, _TOP_K, _MIN_P |
| head_override_tensor | -ot | LLAMA_ARG_OVERRIDE_TENSOR |
| head_fit, head_fit_target_mib, head_fit_ctx | --fit, -fitt, -fitc | LLAMA_ARG_FIT, LLAMA_ARG_FIT_TARGET, LLAMA_ARG_FIT_CTX |
| head_warmup = False | --no-warmup | none in llama.cpp: an argument |
| head_extra_args | as given | arguments |
"""

from __future__ import annotations

import re

from pyinfra import host
from pyinfra.api import operation

from deploys.common import failure
from deploys.settings import Settings
from facts.llama_server_flags import LlamaServerFlags

ARGS_VARIABLE = "HALO_LLAMA_SERVER_ARGS"

# Every spelling of the flags halo-provision sets, and the variable that sets each.
MANAGED_FLAGS: dict[str, str] = {
    **dict.fromkeys(("-m", "--model", "-mu", "--model-url", "-hf", "-hfr", "--hf-repo"), "model_path or model_url"),
    **dict.fromkeys(("--host",), "head_bind_address"),
    **dict.fromkeys(("--port",), "head_port"),
    **dict.fromkeys(("-ngl", "--gpu-layers", "--n-gpu-layers"), "head_gpu_layers"),
    **dict.fromkeys(("-fa", "--flash-attn"), "head_flash_attn"),
    **dict.fromkeys(("-c", "--ctx-size"), "head_ctx_size"),
    **dict.fromkeys(("-np", "--parallel"), "head_parallel"),
    **dict.fromkeys(("-ctk", "--cache-type-k"), "head_cache_type_k"),
    **dict.fromkeys(("-ctv", "--cache-type-v"), "head_cache_type_v"),
    **dict.fromkeys(("-ts", "--tensor-split"), "head_tensor_split"),
    **dict.fromkeys(("--metrics",), "head_metrics"),
    **dict.fromkeys(("-lv", "--verbosity", "--log-verbosity"), "head_log_verbosity"),
    **dict.fromkeys(("--rpc",), "the inventory's rpc_workers (head_rpc_servers)"),
    **dict.fromkeys(("-lm", "--load-mode", "-dio", "--direct-io", "--no-mmap", "--mmap"), "deploys/head.py (DirectIO)"),
    **dict.fromkeys(("--api-key", "--api-key-file"), "head_api_key_file (a key on a command line is readable by all)"),
    **dict.fromkeys(("-a", "--alias"), "head_alias"),
    **dict.fromkeys(("--jinja", "--no-jinja"), "head_jinja"),
    **dict.fromkeys(("--chat-template-file",), "head_chat_template_file"),
    **dict.fromkeys(("-b", "--batch-size"), "head_batch_size"),
    **dict.fromkeys(("-ub", "--ubatch-size"), "head_ubatch_size"),
    **dict.fromkeys(("--temp", "--temperature"), "head_temperature"),
    **dict.fromkeys(("--top-p",), "head_top_p"),
    **dict.fromkeys(("--top-k",), "head_top_k"),
    **dict.fromkeys(("--min-p",), "head_min_p"),
    **dict.fromkeys(("--warmup", "--no-warmup"), "head_warmup"),
    **dict.fromkeys(("-ot", "--override-tensor"), "head_override_tensor"),
    **dict.fromkeys(("-fit", "--fit"), "head_fit"),
    **dict.fromkeys(("-fitt", "--fit-target"), "head_fit_target_mib"),
    **dict.fromkeys(("-fitc", "--fit-ctx"), "head_fit_ctx"),
}

# The flag each tuning variable needs in the built binary's --help (checked before a restart).
NEEDS_FLAG = {
    "head_alias": "--alias", "head_jinja": "--jinja", "head_chat_template_file": "--chat-template-file",
    "head_batch_size": "--batch-size", "head_ubatch_size": "--ubatch-size", "head_temperature": "--temp",
    "head_top_p": "--top-p", "head_top_k": "--top-k", "head_min_p": "--min-p", "head_warmup": "--no-warmup",
    "head_override_tensor": "--override-tensor", "head_fit": "--fit", "head_fit_target_mib": "--fit-target",
    "head_fit_ctx": "--fit-ctx",
}

_NUMBER = re.compile(r"^-?[0-9.]+$")


def _option(arg: str) -> str | None:
    """The option an argument names ('--ctx-size=4' -> '--ctx-size'); None for a value.

    >>> [_option(a) for a in ["--cache-reuse", "256", "-c=4", "-1"]]
    ['--cache-reuse', None, '-c', None]
    """
    if not arg.startswith("-") or _NUMBER.match(arg):
        return None
    return arg.split("=", 1)[0]


def extra_args_problems(args: list[str]) -> list[str]:
    """What is wrong with head_extra_args, without the binary (validated with the settings).

    >>> extra_args_problems(["--cache-reuse", "256"])
    []
    >>> extra_args_problems(["256"])
    ["the first entry '256' is not an option; expected an option such as '--cache-reuse' first"]
    >>> extra_args_problems(["-c", "8192"])
    ["'-c' is set by head_ctx_size; expected it there, not in head_extra_args"]
    """
    problems = []
    if args and _option(args[0]) is None:
        problems.append(f"the first entry {args[0]!r} is not an option; expected an option such as "
                        "'--cache-reuse' first")
    for arg in args:
        flag = _option(arg)
        if flag in MANAGED_FLAGS:
            problems.append(f"{flag!r} is set by {MANAGED_FLAGS[flag]}; expected it there, not in head_extra_args")
    return problems


def _number(value: float) -> str:
    return f"{value:g}"


def tuning_env(s: Settings) -> dict[str, str]:
    """The LLAMA_ARG_* variables of the tuning settings that are set (None: llama.cpp's default).

    >>> tuning_env(Settings(head_alias="tiny", head_temperature=0.7, head_top_k=40, head_jinja=True))
    {'LLAMA_ARG_ALIAS': 'tiny', 'LLAMA_ARG_JINJA': '1', 'LLAMA_ARG_TEMPERATURE': '0.7', 'LLAMA_ARG_TOP_K': '40'}
    >>> tuning_env(Settings())
    {}
    """
    values = {
        "LLAMA_ARG_ALIAS": s.head_alias,
        "LLAMA_ARG_JINJA": None if s.head_jinja is None else ("1" if s.head_jinja else "0"),
        "LLAMA_ARG_CHAT_TEMPLATE_FILE": s.head_chat_template_file,
        "LLAMA_ARG_BATCH": s.head_batch_size,
        "LLAMA_ARG_UBATCH": s.head_ubatch_size,
        "LLAMA_ARG_TEMPERATURE": s.head_temperature,
        "LLAMA_ARG_TOP_P": s.head_top_p,
        "LLAMA_ARG_TOP_K": s.head_top_k,
        "LLAMA_ARG_MIN_P": s.head_min_p,
        "LLAMA_ARG_OVERRIDE_TENSOR": ",".join(s.head_override_tensor) or None,
        "LLAMA_ARG_FIT": s.head_fit,
        "LLAMA_ARG_FIT_TARGET": s.head_fit_target_mib,
        "LLAMA_ARG_FIT_CTX": s.head_fit_ctx,
    }
    return {key: _number(v) if isinstance(v, float) else str(v) for key, v in values.items() if v is not None}


def server_args(s: Settings) -> list[str]:
    """Arguments without an LLAMA_ARG_* twin: --no-warmup, then head_extra_args.

    >>> server_args(Settings(head_warmup=False, head_extra_args=["--cache-reuse", "256"]))
    ['--no-warmup', '--cache-reuse', '256']
    """
    return (["--no-warmup"] if not s.head_warmup else []) + list(s.head_extra_args)


def unsupported(s: Settings, flags: set[str]) -> list[str]:
    """The settings this build's llama-server cannot take (flags from its --help), one sentence each.

    >>> unsupported(Settings(head_fit="on", head_extra_args=["--cache-reuse", "9"]), {"--help", "--temp"})
    ["head_fit = 'on' needs --fit, which this build's llama-server does not list in --help; expected None, or a newer llama_cpp_ref", "head_extra_args = ['--cache-reuse', '9']: this build's llama-server has no --cache-reuse (see its --help); expected options it lists"]
    """
    problems = []
    for variable, flag in NEEDS_FLAG.items():
        value = getattr(s, variable)
        is_default = value is None or value == [] or (variable == "head_warmup" and value)
        if not is_default and flag not in flags:
            problems.append(f"{variable} = {value!r} needs {flag}, which this build's llama-server does not list "
                            "in --help; expected None, or a newer llama_cpp_ref")
    for arg in s.head_extra_args:
        flag = _option(arg)
        if flag is not None and flag not in flags:
            problems.append(f"head_extra_args = {list(s.head_extra_args)!r}: this build's llama-server has no "
                            f"{flag} (see its --help); expected options it lists")
    return problems


@operation()
def supported_by_build(s: Settings, binary: str):
    """Fail the host, before llama-server is (re)started, when the build lacks a flag a setting needs."""
    flags = host.get_fact(LlamaServerFlags, binary=binary)
    problems = unsupported(s, set(flags)) if flags else []
    if not problems:
        host.noop("this build's llama-server takes every tuning setting" if flags else
                  f"no llama-server at {binary} yet: its settings are checked once it is built")
        return
    yield failure(" ".join(problems) + " Fix it in the inventory's host data or group_data/all.py.")
