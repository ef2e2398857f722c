"""Memory: the default budget from free memory, and the low-memory modes (selection and what each one calls)."""

from unittest import mock

import pytest
import torch

from pipelines import memory
from pipelines.registry import Registry


@pytest.mark.parametrize("setting, available, mode", [
    ("auto", 100, "normal"),  # the whole model (100) fits
    ("auto", 99, "medvram"),  # only its largest component (60) does
    ("auto", 59, "lowvram"),
    ("normal", 1, "normal"), ("medvram", 1000, "medvram"), ("lowvram", 1000, "lowvram"),  # a fixed setting wins
])
def test_auto_picks_the_lightest_mode_that_fits(setting, available, mode):
    assert memory.choose_mode(setting, total=100, largest=60, available=available) == mode


def _pipe(unet_size: int = 60, text_size: int = 40):
    pipe = mock.MagicMock()
    pipe.components = {"unet": torch.nn.Linear(unet_size, 1, bias=False),
                       "text_encoder": torch.nn.Linear(text_size, 1, bias=False), "scheduler": object()}
    return pipe


@pytest.mark.parametrize("available, mode, offload, attention_slicing", [
    (10**6, "normal", None, False),
    (300, "medvram", "enable_model_cpu_offload", False),
    (100, "lowvram", "enable_sequential_cpu_offload", True),
])
def test_each_mode_calls_its_pipeline_methods(available, mode, offload, attention_slicing):
    pipe = _pipe()  # 240 + 160 bytes of float32 weights
    assert memory.place(pipe, "auto", "cuda", available) == mode
    if offload is None:
        pipe.to.assert_called_once_with("cuda")
        pipe.vae.enable_tiling.assert_not_called()
    else:
        getattr(pipe, offload).assert_called_once_with(device="cuda")
        pipe.to.assert_not_called()
        pipe.vae.enable_slicing.assert_called_once_with()
        pipe.vae.enable_tiling.assert_called_once_with()
    assert pipe.enable_attention_slicing.called == attention_slicing


def test_on_the_cpu_nothing_is_offloaded_but_slicing_still_applies():
    pipe = _pipe()
    assert memory.place(pipe, "lowvram", "cpu", 10**9) == "lowvram"
    pipe.enable_sequential_cpu_offload.assert_not_called()
    pipe.enable_model_cpu_offload.assert_not_called()
    pipe.vae.enable_tiling.assert_called_once_with()
    pipe.enable_attention_slicing.assert_called_once_with()


def test_default_budget_is_a_share_of_free_memory_not_total(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (10 * 2**30, 80 * 2**30))  # (free, total)
    assert memory.default_budget("cuda") == int(10 * 2**30 * memory.HEADROOM)
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    assert memory.default_budget("cpu") == pytest.approx(available * memory.HEADROOM, rel=0.2)


def test_a_model_over_the_budget_loads_in_a_low_memory_mode_and_generates(models_dir, tmp_path):
    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter
    from pipelines.request import GenerationRequest

    with Registry(models_dir).lease("tiny-sd") as model:
        sizes = [memory.module_bytes(m) for m in model.pipe.components.values() if isinstance(m, torch.nn.Module)]
    registry = Registry(models_dir, memory_budget=max(sizes) + 1)  # only the largest component fits
    engine = Engine(registry, OutputWriter(tmp_path), preview_every=1)
    request = GenerationRequest.from_values({"prompt": "a red circle", "steps": 2, "width": 64, "height": 64,
                                             "model": "tiny-sd", "batch_size": 2})
    result = engine.generate(request)
    assert len(result.images) == 2 and result.images[0].size == (64, 64)
    assert registry.resident()[0]["mode"] == "medvram"
    with registry.lease("tiny-sd") as model:
        assert model.pipe.vae.use_slicing and model.pipe.vae.use_tiling
