"""Unit tests of deploys/serving.py: the tuning variables as LLAMA_ARG_* variables and arguments, what
bad values say, and the check against the built binary's --help."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploys.head import env_file_text, render_unit, server_env
from deploys.serving import ARGS_VARIABLE, server_args, tuning_env, unsupported
from deploys.settings import SettingsError, validate_inventory
from tests.unit.test_head import inventory

FLAGS_2026 = set(json.loads((Path(__file__).parent / "facts/LlamaServerFlags/build_2026.json").read_text())["expected"])


def head(**data):
    return validate_inventory(inventory(halo1=data))["halo1"]


def problems(**data) -> str:
    with pytest.raises(SettingsError) as error:
        validate_inventory(inventory(halo1=data))
    return str(error.value)



def test_every_tuning_variable_reaches_the_environment_file_under_llama_cpps_name():
    s = head(head_alias="tiny", head_jinja=False, head_chat_template_file="/srv/models/chat.jinja",
             head_batch_size=512, head_ubatch_size=256, head_temperature=0.6, head_top_p=0.95, head_top_k=20,
             head_min_p=0, head_override_tensor=["blk\\.[0-9]+\\.ffn_.*_exps\\.=CPU", "output\\.weight=CPU"],
             head_fit="off", head_fit_target_mib=1024, head_fit_ctx=4096)
    env = server_env(s, [], "/srv/models/tiny.gguf", "--load-mode")
    assert {k: v for k, v in env.items() if k in tuning_env(s)} == {
        "LLAMA_ARG_ALIAS": "tiny", "LLAMA_ARG_JINJA": "0", "LLAMA_ARG_CHAT_TEMPLATE_FILE": "/srv/models/chat.jinja",
        "LLAMA_ARG_BATCH": "512", "LLAMA_ARG_UBATCH": "256", "LLAMA_ARG_TEMPERATURE": "0.6",
        "LLAMA_ARG_TOP_P": "0.95", "LLAMA_ARG_TOP_K": "20", "LLAMA_ARG_MIN_P": "0",
        "LLAMA_ARG_OVERRIDE_TENSOR": "blk\\.[0-9]+\\.ffn_.*_exps\\.=CPU,output\\.weight=CPU",
        "LLAMA_ARG_FIT": "off", "LLAMA_ARG_FIT_TARGET": "1024", "LLAMA_ARG_FIT_CTX": "4096",
    }
    assert ARGS_VARIABLE not in env
    # systemd drops an unquoted backslash: every value is double-quoted, a backslash doubled (env_file_line)
    text = env_file_text(env, "--load-mode")
    assert '\nLLAMA_ARG_OVERRIDE_TENSOR="blk\\\\.[0-9]+\\\\.ffn_.*_exps\\\\.=CPU,output\\\\.weight=CPU"\n' in text
    assert '\nLLAMA_ARG_TOP_K="20"\n' in text


def test_defaults_add_nothing():
    s = head()
    assert tuning_env(s) == {} and server_args(s) == []
    assert ARGS_VARIABLE not in server_env(s, [], "/m.gguf", None)


def test_arguments_without_a_variable_go_through_execstart():
    s = head(head_warmup=False, head_extra_args=["--cache-reuse", "256", "--no-context-shift"])
    assert server_env(s, [], "/m.gguf", None)[ARGS_VARIABLE] == "--no-warmup --cache-reuse 256 --no-context-shift"
    assert f"\nExecStart=/opt/llama.cpp/current/bin/llama-server ${ARGS_VARIABLE}\n" in render_unit(s)


@pytest.mark.parametrize("variable, value, words", [
    ("head_alias", "two,names", "head_alias = 'two,names' is invalid: expected a model name"),
    ("head_alias", "", "head_alias = '' is invalid"),
    ("head_jinja", "yes", "head_jinja = 'yes' is invalid: expected True"),
    ("head_chat_template_file", "chat.jinja", "expected an absolute path of a Jinja chat template"),
    ("head_batch_size", 0, "head_batch_size = 0 is invalid: expected a whole number of tokens from 1"),
    ("head_ubatch_size", "512", "head_ubatch_size = '512' is invalid"),
    ("head_temperature", -1, "head_temperature = -1 is invalid: expected a number from 0 to 10"),
    ("head_top_p", 1.5, "head_top_p = 1.5 is invalid"),
    ("head_top_k", 2.5, "head_top_k = 2.5 is invalid"),
    ("head_min_p", "0.1", "head_min_p = '0.1' is invalid"),
    ("head_warmup", "no", "head_warmup = 'no' is invalid: expected True"),
    ("head_override_tensor", ["exps=CPU; rm -rf /"], "entry 'exps=CPU; rm -rf /' is not allowed"),
    ("head_override_tensor", ["a=CPU,b=CPU"], "is not allowed"),
    ("head_override_tensor", ["no-buffer-type"], "is not allowed"),
    ("head_fit", True, "head_fit = True is invalid: expected 'on' or 'off'"),
    ("head_fit_target_mib", -1, "head_fit_target_mib = -1 is invalid"),
    ("head_fit_ctx", "4k", "head_fit_ctx = '4k' is invalid"),
    ("head_extra_args", ["--cache-reuse 256"], "entry '--cache-reuse 256' is not allowed"),
    ("head_extra_args", ["--x", "$(id)"], "entry '$(id)' is not allowed"),
    ("head_extra_args", ["256"], "the first entry '256' is not an option"),
    ("head_extra_args", ["-c", "8192"], "'-c' is set by head_ctx_size; expected it there"),
    ("head_extra_args", ["--rpc=10.0.0.1:1"], "'--rpc' is set by the inventory's rpc_workers"),
    ("head_extra_args", ["--api-key", "k"], "'--api-key' is set by head_api_key_file"),
    ("head_extra_args", ["--no-warmup"], "'--no-warmup' is set by head_warmup"),
])
def test_bad_values_name_host_variable_value_and_fix(variable, value, words):
    message = problems(**{variable: value})
    assert message.startswith("halo1: ") and words in message, message
    assert "Fix it in" in message


def test_ubatch_larger_than_batch():
    assert ("halo1: head_ubatch_size = 1024 is invalid: it is larger than head_batch_size = 512"
            in problems(head_batch_size=512, head_ubatch_size=1024))


def test_a_build_without_fit_refuses_fit_settings_and_unknown_extra_args():
    s = head(head_fit="on", head_extra_args=["--cache-reuse", "256", "--frobnicate"])
    old = FLAGS_2026 - {"--fit", "-fit"}
    found = unsupported(s, old)
    assert found[0].startswith("head_fit = 'on' needs --fit, which this build's llama-server does not list")
    assert any("has no --frobnicate" in p for p in found)
    assert unsupported(head(head_temperature=0.5, head_warmup=False), {"--help", "--temp", "--no-warmup"}) == []
