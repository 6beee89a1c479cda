"""deploys/plan.py without hosts: masked output, predicted reasons, the diff of files our commands write."""

import logging

import pytest
from pyinfra.api import Config
from pyinfra.api.operation import OperationMeta
from pyinfra.context import ctx_host

from deploys.plan import SecretMask, mask_line, reasons, show_file_change
from tests.unit.fake_host import FakeHost, FakeState


@pytest.mark.parametrize(("line", "shown"), [
    ('+ HF_TOKEN="hf_abcdef"', "+ HF_TOKEN=***"),
    ("- MY_API_KEY=s3cr3t GGML_VK_VISIBLE_DEVICES=0", "- MY_API_KEY=*** GGML_VK_VISIBLE_DEVICES=0"),
    ("\x1b[32m+ DB_PASSWORD='a b'\x1b[0m", "\x1b[32m+ DB_PASSWORD=***\x1b[0m"),  # colored diff lines
    ("  LLAMA_ARG_API_KEY_FILE=/root/key", "  LLAMA_ARG_API_KEY_FILE=/root/key"),  # a path, not a secret
    ("  LLAMA_ARG_MODEL=/models/m.gguf", "  LLAMA_ARG_MODEL=/models/m.gguf"),
    ("+ URL=https://user:pw@example.org/m.gguf", "+ URL=https://user:***@example.org/m.gguf"),
])
def test_secret_values_are_masked_and_others_kept(line, shown):
    assert mask_line(line) == shown


def test_the_filter_masks_what_pyinfra_logs():
    record = logging.LogRecord("pyinfra", logging.INFO, __file__, 1, "  %s", ("+ HF_TOKEN=hf_x",), None)
    assert SecretMask().filter(record) and record.getMessage() == "  + HF_TOKEN=***"


class Host(FakeHost):
    def __init__(self, executing: bool, diff: bool = False):
        super().__init__({})
        self.state = FakeState()
        self.state.is_executing = executing
        self.state.config = Config(DIFF=diff)


def test_reasons_are_predictions_while_prepared_and_results_when_run():
    will, wont = OperationMeta("a", is_change=True), OperationMeta("b", is_change=False)
    with ctx_host.use(Host(executing=False)):
        assert reasons({"unit changed": will, "env changed": wont, "flag": True, "no": lambda: False}) == \
            ["unit changed", "flag"]
    done = OperationMeta("c", is_change=True)
    done.set_complete(True, ["a command"], None)
    with ctx_host.use(Host(executing=True)):
        # an operation not run yet (its host failed before it) changed nothing
        assert reasons({"done": done, "not run": OperationMeta("d", is_change=True)}) == ["done"]


def test_our_own_file_writes_show_a_diff_with_diff_only(caplog):
    caplog.set_level(logging.INFO, logger="pyinfra")
    host = Host(executing=False, diff=True)
    with ctx_host.use(host):
        show_file_change("/etc/default/grub", 'A=1\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n',
                         'A=1\nGRUB_CMDLINE_LINUX_DEFAULT="quiet ttm.pages_limit=31457280"\n')
    assert host.logs == ["Will modify /etc/default/grub"]
    text = caplog.text
    assert '- GRUB_CMDLINE_LINUX_DEFAULT="quiet"' in text
    assert '+ GRUB_CMDLINE_LINUX_DEFAULT="quiet ttm.pages_limit=31457280"' in text
    host = Host(executing=False, diff=False)
    with ctx_host.use(host):
        show_file_change("/etc/default/grub", "A=1\n", "A=2\n")
    assert host.logs == []
