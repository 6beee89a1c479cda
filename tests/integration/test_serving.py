"""The llama-server settings people tune and the fit check, on the lab cluster (after deploys/full.py):
the settings reach the running llama-server (its environment, command line, /props and journal), a
model that cannot fit is refused before the restart with the numbers per device, one that fits goes
through, and head_rpc_servers = "auto" serves with the fewest RPC servers; the build's llama-fit-params
answers beside our fit check (its KV cache is ours; its compute buffers are far larger than our margin)."""

from __future__ import annotations

import json
import re
import shlex

from tests.integration.conftest import assert_no_changes, inventory_with
from tests.integration.test_head import ENV_FILE, UNIT, address, env_file, http, journal_of_current_process, sh
from lab import lab
from lab.gpu import GpuProfile

MIB = 1 << 20
TEMPLATE = "/etc/halo-provision/test-chat.jinja"
CHAT = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"
TUNED = {
    "head_alias": "halo-tiny", "head_jinja": True, "head_chat_template_file": TEMPLATE,
    "head_batch_size": 256, "head_ubatch_size": 128, "head_temperature": 0.25, "head_top_p": 0.9,
    "head_top_k": 17, "head_min_p": 0.03, "head_warmup": False, "head_override_tensor": ["output\\.weight=CPU"],
    "head_fit": "off", "head_fit_ctx": 1024, "head_extra_args": ["--cache-reuse", "64"],
    "head_log_verbosity": 5,  # llama.cpp logs tensor overrides at debug level
}


def running_process() -> tuple[dict[str, str], list[str]]:
    """The running llama-server's environment and command line, from /proc."""
    pid = sh(f"systemctl show -p MainPID --value {UNIT}")
    environ = dict(line.split("=", 1) for line in sh(f"tr '\\0' '\\n' < /proc/{pid}/environ").splitlines() if "=" in line)
    return environ, sh(f"tr '\\0' '\\n' < /proc/{pid}/cmdline").splitlines()


def test_tuning_settings_reach_the_running_llama_server(cluster, tmp_path):
    sh(f"printf '%s' {shlex.quote(CHAT)} > {TEMPLATE}")
    inventory = inventory_with(tmp_path, halo1=TUNED)
    try:
        first = cluster.run("deploys/head.py", inventory=inventory)
        assert first.returncode == 0, first.stdout + first.stderr
        environ, cmdline = running_process()
        assert {k: environ.get(k) for k in (
            "LLAMA_ARG_ALIAS", "LLAMA_ARG_JINJA", "LLAMA_ARG_CHAT_TEMPLATE_FILE", "LLAMA_ARG_BATCH", "LLAMA_ARG_UBATCH",
            "LLAMA_ARG_TEMPERATURE", "LLAMA_ARG_TOP_P", "LLAMA_ARG_TOP_K", "LLAMA_ARG_MIN_P",
            "LLAMA_ARG_OVERRIDE_TENSOR", "LLAMA_ARG_FIT", "LLAMA_ARG_FIT_CTX")} == {
            "LLAMA_ARG_ALIAS": "halo-tiny", "LLAMA_ARG_JINJA": "1", "LLAMA_ARG_CHAT_TEMPLATE_FILE": TEMPLATE,
            "LLAMA_ARG_BATCH": "256", "LLAMA_ARG_UBATCH": "128", "LLAMA_ARG_TEMPERATURE": "0.25",
            "LLAMA_ARG_TOP_P": "0.9", "LLAMA_ARG_TOP_K": "17", "LLAMA_ARG_MIN_P": "0.03",
            "LLAMA_ARG_OVERRIDE_TENSOR": "output\\.weight=CPU",  # the backslash survives the env file
            "LLAMA_ARG_FIT": "off", "LLAMA_ARG_FIT_CTX": "1024"}
        assert cmdline[1:] == ["--no-warmup", "--cache-reuse", "64"]

        # what llama-server itself says it uses
        status, text = http("/props")
        assert status == 200, text
        props = json.loads(text)
        params = props["default_generation_settings"]["params"]
        assert (round(params["temperature"], 3), round(params["top_p"], 3), params["top_k"], round(params["min_p"], 3)) \
            == (0.25, 0.9, 17, 0.03)
        assert props["model_alias"] == "halo-tiny" and props["chat_template"] == CHAT
        assert [m["id"] for m in json.loads(http("/v1/models")[1])["data"]] == ["halo-tiny"]
        assert re.search(r"tensor output\.weight \(.*\) buffer type overridden to CPU", journal_of_current_process())
        # no generation at log verbosity 5: llama.cpp would log the tiny model's random byte tokens, which
        # are not UTF-8, into the unit's journal, where later tests read it

        assert_no_changes(cluster.run("deploys/head.py", inventory=inventory))
    finally:
        sh(f"rm -f {TEMPLATE}")
        restored = cluster.run("deploys/head.py")
        assert restored.returncode == 0, restored.stdout + restored.stderr
    environ, cmdline = running_process()
    assert "LLAMA_ARG_ALIAS" not in environ and cmdline[1:] == []


def test_bad_tuning_values_stop_before_any_change(cluster, tmp_path):
    before = sh(f"sha256sum {ENV_FILE} /etc/systemd/system/{UNIT}")
    cases = {
        "head_extra_args": (["-c", "99"], "halo1: head_extra_args = ['-c', '99'] is invalid: '-c' is set by head_ctx_size"),
        "head_top_p": (2, "halo1: head_top_p = 2 is invalid: expected a number from 0 to 1"),
        "head_chat_template_file": ("/nowhere/chat.jinja", "halo1: head_chat_template_file = '/nowhere/chat.jinja' "
                                    "is invalid: there is no such file on halo1"),
    }
    for variable, (value, words) in cases.items():
        proc = cluster.run("deploys/head.py", inventory=inventory_with(tmp_path, halo1={variable: value}))
        assert proc.returncode != 0 and words in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    # an option this build does not have: refused when the binary is known, before the restart
    proc = cluster.run("deploys/head.py", inventory=inventory_with(tmp_path, halo1={"head_extra_args": ["--frobnicate"]}))
    assert proc.returncode != 0
    assert "this build's llama-server has no --frobnicate" in proc.stdout + proc.stderr
    assert sh(f"sha256sum {ENV_FILE} /etc/systemd/system/{UNIT}") == before
    assert http("/health")[0] == 200


def kv_buffer_mib(journal: str) -> float:
    """llama.cpp's own KV cache size: the sum of its per-device "KV buffer size" lines."""
    return sum(float(m) for m in re.findall(r"KV buffer size = +([0-9.]+) MiB", journal))


def set_gtt(**mib: int) -> None:
    for name, size in mib.items():
        lab.set_gpu(name, GpuProfile(gtt_total=size * MIB, vram_total=0))


def test_the_fit_check_refuses_a_model_that_cannot_fit_and_passes_one_that_does(cluster):
    """The tiny model needs 1.9 MiB of weights + 24 MiB of KV cache (16384 tokens of f16) + 1.7 MiB of
    compute margin = 27.6 MiB; the fake GPUs' GTT decides."""
    journal = journal_of_current_process()
    assert kv_buffer_mib(journal) == 24.0, journal  # the estimate's KV figure is llama.cpp's own
    workers = [f"{address(name)}:50052" for name in ("halo2", "halo3")]
    pid = sh(f"systemctl show -p MainPID --value {UNIT}")
    try:
        set_gtt(halo1=8, halo2=8, halo3=8)
        proc = cluster.run("deploys/head.py", head_fit_reserve_mib="0", head_parallel="2")  # a change: would restart
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0, output
        assert ("halo1: the model does not fit: it needs 27.6 MiB (weights 1.9 MiB in 1 file(s) + KV cache 24.0 MiB "
                "for 16384 tokens of f16/f16 + compute 1.7 MiB), but the 3 device(s) offer 24.0 MiB after "
                "head_fit_reserve_mib = 0 each (") in output, output
        assert f"RPC {workers[0]} (halo2) 8.0 MiB (GTT 8.0 MiB + VRAM 0 MiB - reserve 0 MiB)" in output
        assert "halo1 (head GPU) 8.0 MiB (GTT 8.0 MiB + VRAM 0 MiB - reserve 0 MiB)" in output
        assert "Fixes: a smaller head_ctx_size (the KV cache is 24.0 MiB at 16384 tokens), head_cache_type_k/v = 'q8_0'" in output
        assert sh(f"systemctl show -p MainPID --value {UNIT}") == pid  # not restarted
        assert 'LLAMA_ARG_N_PARALLEL="1"' in sh(f"cat {ENV_FILE}")  # nor rewritten

        set_gtt(halo1=20, halo2=20, halo3=20)  # the head and one worker are enough
        proc = cluster.run("deploys/head.py", head_fit_reserve_mib="0")
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output
        assert "the model fits: it needs 27.6 MiB" in output and f"it needs the head and 1 of 2 RPC servers ({workers[0]})" in output
        assert sh(f"systemctl show -p MainPID --value {UNIT}") == pid  # nothing changed: no restart

        auto = cluster.run("deploys/head.py", head_fit_reserve_mib="0", head_rpc_servers="auto")
        assert auto.returncode == 0, auto.stdout + auto.stderr
        assert env_file()["LLAMA_ARG_RPC"] == workers[0]
        assert http("/completion", {"prompt": "x", "n_predict": 2})[0] == 200
        journal = journal_of_current_process()
        assert f"[{workers[0]}]" in journal and f"[{workers[1]}]" not in journal  # halo3 left idle
        assert_no_changes(cluster.run("deploys/head.py", head_fit_reserve_mib="0", head_rpc_servers="auto"))
    finally:
        for name in ("halo1", "halo2", "halo3"):
            lab.set_gpu(name, GpuProfile())
        restored = cluster.run("deploys/head.py")
        assert restored.returncode == 0, restored.stdout + restored.stderr
    assert env_file()["LLAMA_ARG_RPC"] == ",".join(workers)


FITTER = re.compile(r"Beside ours, llama\.cpp's fitter \(llama-fit-params\) estimates ([0-9]+) MiB: model ([0-9]+) \+ "
                    r"context ([0-9]+) \+ compute ([0-9]+) MiB \(([^)]*)\); ([^\n]*)")


def test_llama_cpps_own_fitter_answers_beside_ours(cluster):
    """The build's llama-fit-params runs on the head with llama-server's settings before it starts (not
    while it runs: it holds the RPC servers); its estimate and fit are reported beside ours, and where
    the two disagree is said."""
    assert sh("test -x /opt/llama.cpp/current/bin/llama-fit-params && echo yes") == "yes"
    try:
        sh(f"systemctl stop {UNIT}")
        set_gtt(halo1=8, halo2=8, halo3=8)  # ours: does not fit; the RPC servers report the workers' free RAM
        refused = cluster.run("deploys/head.py", head_fit_reserve_mib="0")
        output = refused.stdout + refused.stderr
        assert refused.returncode != 0 and "halo1: the model does not fit: it needs 27.6 MiB" in output, output
        found = FITTER.search(output)
        assert found, output
        print("refused:", found[0])
        assert re.fullmatch(r"RPC0 [0-9]+ MiB, RPC1 [0-9]+ MiB, host memory [0-9]+ MiB", found[5]), found[5]
        assert int(found[3]) == 24  # its KV cache: ours (24.0 MiB), as llama.cpp allocates it
        assert "verdict: ours says it does not fit, llama.cpp's fitter fits it as it is" in output, output

        for name in ("halo1", "halo2", "halo3"):
            lab.set_gpu(name, GpuProfile())
        served = cluster.run("deploys/head.py")  # llama-server is stopped: the fitter runs, then it starts
        output = served.stdout + served.stderr
        assert served.returncode == 0, output
        found = FITTER.search(output)
        assert found and found[6].startswith("it fits with -c 16384 "), output
        print("served:", found[0])
        assert "verdict:" not in found[0] and "KV cache: ours" not in found[0]
        assert sh(f"systemctl is-active {UNIT}") == "active"

        again = cluster.run("deploys/head.py")  # llama-server holds the RPC servers now: not run
        assert "llama.cpp's fitter was not run: llama-server holds the RPC servers" in again.stdout + again.stderr
        assert_no_changes(again)
    finally:
        for name in ("halo1", "halo2", "halo3"):
            lab.set_gpu(name, GpuProfile())
        restored = cluster.run("deploys/head.py")
        assert restored.returncode == 0, restored.stdout + restored.stderr
