"""`bf16: auto` and the other speed settings the machine chooses (userlm/hardware.py).

The CPU's bf16 support is patched where the code reads it (torch's own checks), so both kinds
of CPU are tested on whichever one runs the suite.
"""

from __future__ import annotations

import pytest
import torch

from userlm.hardware import native_bf16, resolve_bf16, set_cpu_threads, usable_cpus
from userlm.train.config import load_recipe
from userlm.train.sft import training_args


@pytest.fixture
def cpu(monkeypatch):
    """Make this machine report a CPU with (`cpu("AVX512", bf16=True)`) or without native bf16."""

    def make(capability: str, *, bf16: bool, amx: bool = False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)

    return make


def test_auto_is_float32_on_a_cpu_without_bf16(cpu):
    cpu("AVX2", bf16=False)
    precision = resolve_bf16("auto")
    assert precision.bf16 is False
    assert "no AVX-512 BF16 or AMX" in precision.reason and "emulated" in precision.reason


def test_auto_is_bf16_on_a_cpu_with_avx512_bf16_or_amx(cpu):
    cpu("AVX512", bf16=True)
    assert resolve_bf16("auto") == resolve_bf16("auto") and resolve_bf16("auto").bf16 is True
    assert "AVX-512 BF16" in resolve_bf16("auto").reason
    cpu("AVX512", bf16=False, amx=True)
    assert resolve_bf16("auto").bf16 is True and "AMX" in resolve_bf16("auto").reason


def test_instructions_turned_off_for_torch_count_as_absent(cpu, monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 with ATEN_CPU_CAPABILITY=avx2 is how a bf16 machine behaves as an AVX2 one."""
    cpu("AVX512", bf16=True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert resolve_bf16("auto").bf16 is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert resolve_bf16("auto").bf16 is True
    cpu("AVX2", bf16=True)  # ATEN_CPU_CAPABILITY=avx2
    assert native_bf16()[0] is False


def test_explicit_true_without_bf16_still_runs_and_warns_in_one_sentence(cpu, capsys):
    cpu("AVX2", bf16=False)
    precision = resolve_bf16(True)
    assert precision.bf16 is True
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: bf16 is true but") and "bf16: auto" in err
    assert resolve_bf16(False).bf16 is False and capsys.readouterr().err == ""


@pytest.mark.parametrize(("has_bf16", "expected"), [(False, False), (True, True)])
def test_the_quickstart_recipe_trains_in_the_precision_the_machine_has(cpu, capsys, tmp_path, has_bf16, expected):
    """The shipped CPU recipe says `bf16: auto`; its SFTConfig gets the machine's
    answer and the run's first line says why."""
    cpu("AVX512" if has_bf16 else "AVX2", bf16=has_bf16)
    recipe = load_recipe(
        "smollm2-cpu-quickstart", [f"output_dir={tmp_path / 'run'}", f"dataset_path={tmp_path / 'prep'}"]
    )
    assert recipe.sft["bf16"] == "auto"
    args, _ = training_args(recipe, "sdpa")
    assert args.bf16 is expected
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"userlm train: {'bf16 autocast' if expected else 'float32'} (bf16: auto, and ")
    assert "threads" in line and "sdpa attention" in line


def test_bf16_takes_true_false_and_auto_from_yaml_and_flags(tmp_path):
    words = [f"output_dir={tmp_path / 'run'}", f"dataset_path={tmp_path / 'prep'}"]
    assert load_recipe("smollm2-cpu-quickstart", [*words, "--no-bf16"]).sft["bf16"] is False
    assert load_recipe("smollm2-cpu-quickstart", [*words, "--bf16"]).sft["bf16"] is True
    assert load_recipe("smollm2-cpu-quickstart", [*words, "--bf16", "auto"]).sft["bf16"] == "auto"
    with pytest.raises(Exception, match="must be true or false or one of 'auto'"):
        load_recipe("smollm2-cpu-quickstart", [*words, "bf16=maybe"])


def test_torch_never_runs_more_threads_than_the_cpus_it_may_use(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr("userlm.hardware.usable_cpus", lambda: 1)
        torch.set_num_threads(2)
        assert set_cpu_threads() == "1 torch threads (the CPUs this process may use)" and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert 1 <= usable_cpus() <= (torch.multiprocessing.cpu_count() or 1)
