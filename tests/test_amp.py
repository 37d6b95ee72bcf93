"""Mixed precision per device (tsn_dali.engine.amp): ``auto`` on CPUs with and without native
bf16 and on GPUs with and without it (capability checks stubbed), explicit values kept with
a warning where slow, and the trainer's start-up line saying what was chosen and why."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tsn_dali.config import CHOICES
from tsn_dali.engine import amp as amp_mod
from tsn_dali.engine.amp import AMP_CHOICES, cpu_bf16_feature, resolve_amp
from tsn_dali.engine.step import AMP_DTYPES

HERE = Path(__file__).resolve().parent
from helpers.tiny_train import make_videos, train_recipe  # noqa: E402

AVX2_ONLY = {"architecture": "x86_64", "avx2": True, "avx512_f": False, "avx512_bf16": False,
             "amx_bf16": False}


def stub_cpu(monkeypatch, caps, mkldnn=True):
    monkeypatch.setattr(amp_mod, "cpu_capabilities", lambda: dict(caps))
    monkeypatch.setattr(amp_mod, "_mkldnn_bf16", lambda: mkldnn)


def stub_gpu(monkeypatch, native: bool, name="GPU sm_80"):
    monkeypatch.setattr(amp_mod, "cuda_bf16_native", lambda device: native)
    monkeypatch.setattr(amp_mod, "_cuda_name", lambda device: name)


def test_choices_agree_with_the_recipe_schema_and_the_step():
    assert tuple(CHOICES["train.amp"]) == AMP_CHOICES
    assert set(AMP_CHOICES) - {"auto"} == set(AMP_DTYPES)


@pytest.mark.parametrize("caps,feature", [
    (AVX2_ONLY, None),
    (dict(AVX2_ONLY, avx512_f=True), None),  # AVX-512 without its BF16 extension: emulated
    (dict(AVX2_ONLY, avx512_f=True, avx512_bf16=True), "AVX512-BF16"),
    (dict(AVX2_ONLY, amx_bf16=True, avx512_bf16=True), "AMX-BF16"),
    ({"architecture": "aarch64", "bf16": True}, "Arm BF16"),
    ({"architecture": "aarch64", "neon": True}, None),
])
def test_cpu_bf16_feature_from_the_cpu_flags(monkeypatch, caps, feature):
    stub_cpu(monkeypatch, caps)
    assert cpu_bf16_feature() == feature


def test_cpu_bf16_needs_torch_onednn_too(monkeypatch):
    stub_cpu(monkeypatch, dict(AVX2_ONLY, avx512_bf16=True), mkldnn=False)
    assert cpu_bf16_feature() is None
    assert resolve_amp("auto", "cpu").amp == "off"


def test_cpu_without_native_bf16_auto_is_off_and_explicit_bf16_warns(monkeypatch):
    stub_cpu(monkeypatch, AVX2_ONLY)
    auto = resolve_amp("auto", "cpu")
    assert auto.amp == "off" and auto.warning is None
    assert auto.describe().startswith("off (auto: CPU has no native bf16")
    bf16 = resolve_amp("bf16", "cpu")
    assert bf16.amp == "bf16" and "20x slower" in bf16.warning and "\n" not in bf16.warning
    off = resolve_amp("off", torch.device("cpu"))
    assert (off.amp, off.warning) == ("off", None)
    assert resolve_amp("fp16", "cpu").warning  # CPU fp16: kept, with a warning


def test_cpu_with_native_bf16_auto_is_bf16(monkeypatch):
    stub_cpu(monkeypatch, dict(AVX2_ONLY, avx512_f=True, avx512_bf16=True))
    auto = resolve_amp("auto", "cpu")
    assert auto.amp == "bf16" and auto.describe() == "bf16 (auto: CPU has AVX512-BF16)"
    assert resolve_amp("bf16", "cpu").warning is None
    assert resolve_amp("off", "cpu").amp == "off"  # an explicit value wins


@pytest.mark.parametrize("native,expected", [(True, "bf16"), (False, "fp16")])
def test_cuda_auto_is_bf16_where_the_gpu_has_it_else_fp16(monkeypatch, native, expected):
    stub_gpu(monkeypatch, native, "GPU sm_80" if native else "GPU sm_70")
    auto = resolve_amp("auto", "cuda:0")
    assert auto.amp == expected and auto.warning is None
    if not native:
        assert "GradScaler" in auto.reason
        assert "sm_70" in resolve_amp("bf16", "cuda").warning
    assert resolve_amp("fp16", "cuda").warning is None
    assert resolve_amp("off", "cuda").amp == "off"


def test_unknown_value_and_other_devices():
    with pytest.raises(ValueError, match="expected one of auto, bf16, fp16, off"):
        resolve_amp("fp8", "cpu")
    assert resolve_amp("auto", "meta").amp == "off"


def test_proc_cpuinfo_fallback(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    monkeypatch.setattr(amp_mod, "CPUINFO", str(cpuinfo))
    caps = amp_mod.cpu_capabilities()
    assert caps["avx512_bf16"] and caps["avx2"] and "amx_bf16" not in caps


# --------------------------------------------------------------------------- the trainer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = make_videos(tmp_path_factory.mktemp("amp_train"), num_videos=4)
    return train_recipe(root, epochs=1)


@pytest.mark.parametrize("amp,line,warned", [
    ("auto", "amp off (auto: CPU has no native bf16", False),
    ("bf16", "amp bf16 (as set)", True),
])
def test_train_startup_line_says_what_was_chosen_and_why(tiny, tmp_path, monkeypatch, capsys,
                                                         amp, line, warned):
    import tsn_dali.train as train_mod

    stub_cpu(monkeypatch, AVX2_ONLY)
    summary = train_mod.run([str(tiny), "--work-dir", str(tmp_path / "w"), "--device", "cpu",
                              "--amp", amp, "--max-steps", "1", "--no-progress"])
    out, err = capsys.readouterr()
    start = [x for x in out.splitlines() if x.startswith("tsn_dali.train: tiny on")]
    assert len(start) == 1 and line in start[0], out
    warnings = [x for x in err.splitlines() if "warning: train.amp=bf16" in x]
    assert len(warnings) == (1 if warned else 0), err
    assert summary["checkpoint"]


def test_the_loader_dtype_follows_the_runs_amp(monkeypatch):
    """``loader.dtype: auto`` feeds the model the dtype it computes in: the run's resolved AMP
    mode where given (test's --amp), else train.amp resolved; an explicit dtype is kept."""
    from types import SimpleNamespace

    from tsn_dali.engine.amp import loader_dtype

    stub_cpu(monkeypatch, AVX2_ONLY)  # train.amp auto -> off on this CPU
    recipe = SimpleNamespace(loader=SimpleNamespace(dtype="auto"), train=SimpleNamespace(amp="auto"))
    cpu = torch.device("cpu")
    assert loader_dtype(recipe, cpu) == "float32"
    assert loader_dtype(recipe, cpu, "bf16") == "bfloat16" and loader_dtype(recipe, cpu, "fp16") == "float16"
    recipe.loader.dtype = "uint8"
    assert loader_dtype(recipe, cpu, "bf16") == "uint8"
