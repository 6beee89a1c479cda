"""Unit tests of deploys/fit.py: the memory estimate, the verdict per device, the fixes it names, and
the fewest RPC servers; the GGUF metadata comes from the GgufModel fact cases."""

from __future__ import annotations

import json
from pathlib import Path

from deploys.fit import MIB, Device, cluster_devices, kv_cache_bytes, need_of, report
from deploys.settings import GIB, Settings
from tests.unit.test_serving import head, problems

CASES = Path(__file__).parent / "facts/GgufModel"
TINY = json.loads((CASES / "tiny_llama.json").read_text())["expected"]
MOE = json.loads((CASES / "split_moe.json").read_text())["expected"]
ENDPOINTS = ["10.151.0.12:50052", "10.151.0.13:50052"]


def gpus(head_gib: float, *worker_gib: float) -> tuple[list[Device], list[Device]]:
    cards = lambda n: [{"card": "card1", "gtt_total": int(n * GIB), "vram_total": 512 << 20}]  # noqa: E731
    head_gpus, rpc, _ = cluster_devices("halo1", cards(head_gib),
                                        [(f"halo{i + 2}", [e], cards(g)) for i, (e, g) in enumerate(zip(ENDPOINTS, worker_gib))])
    return head_gpus, rpc



def test_the_tiny_model_needs_its_file_its_kv_cache_and_a_compute_margin():
    need = need_of(Settings(), TINY)  # head_ctx_size 16384, f16/f16
    assert need.weights == 1982752 and need.files == 1
    assert need.kv == 24 * MIB  # 2 x 6 layers x 2 KV heads x 32 x 16384 x 2 bytes
    assert need.compute == 4 * 512 * (380 + 4 * 128)
    assert need_of(Settings(head_ctx_size=0), TINY).context == 2048  # the model's own


def test_kv_cache_types_and_per_layer_heads():
    per_layer = json.loads((CASES / "per_layer_kv_heads.json").read_text())["expected"]
    assert kv_cache_bytes(per_layer, 1000, "f16", "f16") == (8 + 8 + 2 + 2) * 1000 * (2 * 128 * 2)  # dim 1024/8
    assert kv_cache_bytes(MOE, 1024, "q4_0", "f16") == 94 * 4 * 1024 * (128 * 18 // 32 + 128 * 2)


def test_a_model_that_does_not_fit_names_each_device_the_numbers_and_the_fixes():
    head_gpus, rpc = gpus(120, 120, 120)
    verdict, sentence = report(Settings(head_ctx_size=131072), MOE, head_gpus, rpc, ENDPOINTS)
    # weights 141.9 GB = 132.2 GiB, KV f16 131072 tokens: 94 x 4 x 256 x 2 x 131072 = 23.5 GiB: fits on 3 x 119.5
    assert verdict == "ok", sentence
    assert "it needs the head and 1 of 2 RPC servers (10.151.0.12:50052)" in sentence
    verdict, sentence = report(Settings(head_ctx_size=131072), MOE, *gpus(60, 40, 40), ENDPOINTS)
    assert verdict == "fail"
    assert sentence.startswith("the model does not fit: it needs 156.") and "(weights 132.2 GiB in 3 file(s) + KV cache 23.5 GiB for 131072 tokens of f16/f16" in sentence
    assert "the 3 device(s) offer 138.5 GiB after head_fit_reserve_mib = 1024 each" in sentence
    assert "RPC 10.151.0.12:50052 (halo2) 39.5 GiB (GTT 40.0 GiB + VRAM 512.0 MiB - reserve 1.0 GiB)" in sentence
    assert "halo1 (head GPU) 59.5 GiB (GTT 60.0 GiB + VRAM 512.0 MiB - reserve 1.0 GiB)" in sentence
    assert ("Fixes: a smaller head_ctx_size (the KV cache is 23.5 GiB at 131072 tokens), head_cache_type_k/v = "
            "'q8_0' (KV cache 12.5 GiB), head_cache_type_k/v = 'q4_0' (KV cache 6.6 GiB), another RPC worker, "
            "a bigger ttm_gib on the hosts (more GTT)") in sentence


def test_near_the_limit_warns_and_experts_in_ram_only_warn():
    verdict, sentence = report(Settings(head_ctx_size=4096), MOE, *gpus(50, 45, 45), ENDPOINTS)
    assert verdict == "warn" and "above 90%" in sentence, sentence
    s = Settings(head_ctx_size=4096, head_override_tensor=["exps=CPU"])
    verdict, sentence = report(s, MOE, *gpus(30, 30, 30), ENDPOINTS)
    assert verdict == "warn" and "Not failing: head_override_tensor" in sentence


def test_a_tensor_split_is_checked_per_device():
    s = Settings(head_ctx_size=4096, head_tensor_split=[1, 1, 0])  # nothing on the head's 120 GiB
    verdict, sentence = report(s, MOE, *gpus(120, 60, 60), ENDPOINTS)
    assert verdict == "fail" and "a head_tensor_split that gives each device what it can hold" in sentence


def test_a_host_without_an_amdgpu_card_is_not_judged():
    head_gpus, rpc, _ = cluster_devices("halo1", [], [("halo2", [ENDPOINTS[0]], [])])
    verdict, sentence = report(Settings(), TINY, head_gpus, rpc, ENDPOINTS[:1])
    assert verdict == "unknown" and "halo1 (head GPU): no amdgpu card seen, not counted" in sentence


def test_fit_settings_are_validated():
    assert "head_fit_check = 'maybe' is invalid: expected 'on'" in problems(head_fit_check="maybe")
    assert "head_fit_reserve_mib = -5 is invalid" in problems(head_fit_reserve_mib=-5)
    assert "head_rpc_servers = 2 is invalid: expected 'all'" in problems(head_rpc_servers=2)
    message = problems(head_rpc_servers="auto", head_tensor_split=[1, 1, 1])
    assert "halo1: head_rpc_servers = 'auto' is invalid: head_tensor_split is set" in message
    assert head(head_rpc_servers="auto").head_rpc_servers == "auto"


def test_the_fitter_gets_llama_servers_settings_as_data(tmp_path):
    """LlamaFitParams' command, run here with a stand-in llama-fit-params that prints its environment:
    every value arrives as it is, nothing in it is expanded or run."""
    import subprocess

    from facts.llama_fit import LlamaFitParams

    fake = tmp_path / "llama-fit-params"
    seen = tmp_path / "seen.json"
    fake.write_text(f"""#!/usr/bin/env python3
import json, os, sys
if sys.argv[1:] == ["-fitp", "on"]:
    print("Host 0 0 1")
else:
    print("-c", os.environ["LLAMA_ARG_CTX_SIZE"])
    json.dump({{k: v for k, v in os.environ.items() if k.startswith("HALO_T")}}, open({str(seen)!r}, "w"))
""")
    fake.chmod(0o755)
    hostile = {f"HALO_T{i}": value for i, value in enumerate(
        ["$(touch pwned1)", "`touch pwned2`", "$HOME", "a'b\"c\\d", ";touch pwned3", "x y  z", "#c"])}
    command = LlamaFitParams().command(str(fake), {"LLAMA_ARG_CTX_SIZE": "4096", **hostile})
    proc = subprocess.run(["sh", "-c", command], cwd=tmp_path, capture_output=True, text=True)
    result = LlamaFitParams().process(proc.stdout.splitlines())
    assert result == {"state": "ran", "devices": [], "host": {"model": 0, "context": 0, "compute": 1},
                      "estimated": True, "fitted": "-c 4096", "fit_ok": True}, proc.stdout
    assert json.loads(seen.read_text()) == hostile  # each value as it is
    assert not list(tmp_path.glob("pwned*"))


def test_the_fitter_is_absent_from_older_builds(tmp_path):
    import subprocess

    from facts.llama_fit import LlamaFitParams

    proc = subprocess.run(["sh", "-c", LlamaFitParams().command(str(tmp_path / "nothing"), {"LLAMA_ARG_RPC": "a:1"})],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == ""  # default(): absent
