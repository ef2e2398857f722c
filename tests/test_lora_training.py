"""The outline style, its metric, and the easel-outline LoRA training loop for a few steps on the tiny SD model:
it writes a diffusers-format LoRA that the engine applies, and the style evaluation runs on it."""

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from training.classify import classify, hollowness
from training.lora import OUTLINED, LoraConfig, evaluate_style, style_sheet, train_lora
from training.shapes import example, render


def test_outline_style_keeps_the_scene_and_the_metric_tells_it_apart():
    plain_scores, outline_scores = [], []
    for i in range(24):
        scene, _, plain = example(f"style/{i}", 0.0)
        assert np.array_equal(np.asarray(plain), np.asarray(render(scene)))  # the default drawing is unchanged
        outline = render(scene, "outline")
        assert classify(outline).colour == classify(plain).colour == scene.item.colour
        plain_scores.append(hollowness(plain))
        outline_scores.append(hollowness(outline))
    assert max(plain_scores) == 0.0
    assert np.mean(np.array(outline_scores) > OUTLINED) >= 0.8 and np.mean(outline_scores) > 0.2
    with pytest.raises(ValueError, match="unknown style"):
        render(scene, "striped")


def test_training_a_few_steps_gives_a_lora_the_engine_applies(tmp_path):
    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter
    from pipelines.registry import Registry
    from pipelines.request import GenerationRequest
    from training.tiny_random import save_tiny_models

    model = save_tiny_models(tmp_path)["tiny-sd"]
    out = tmp_path / "Lora" / "outline-test.safetensors"
    stats = train_lora(model, out, LoraConfig(steps=3, batch=2, pool_size=4, lr=5e-2, warmup_steps=1))
    assert stats["steps"] == 3 and stats["parameters"] > 0
    keys = load_file(out).keys()
    assert all(k.startswith("unet.") and ".lora_" in k for k in keys)
    assert any("resnets.0.conv1.lora_A" in k for k in keys) and any("attn2.to_k.lora_B" in k for k in keys)

    engine = Engine(Registry(tmp_path, device="cpu"), OutputWriter(tmp_path / "out", enabled=False))
    pictures = []
    for weight in (0, 1):
        request = GenerationRequest(prompt=f"a red circle <lora:outline-test:{weight}>", model="tiny-sd", width=64,
                                    height=64, steps=3, seed=1)
        result = engine.generate(request, save=False)
        assert result.warnings == []
        pictures.append(np.asarray(result.images[0], dtype=np.int16))
    assert np.abs(pictures[1] - pictures[0]).mean() > 0.5

    report = evaluate_style(model, "outline-test", n_prompts=2, seeds=(0,))
    assert set(report) == {0.0, 0.5, 1.0}
    assert all(0.0 <= row[key] <= 1.0 for row in report.values() for key in ("hollowness", "outlined", "colour"))
    style_sheet(model, "outline-test", tmp_path / "sheet.png", n_prompts=2)
    with Image.open(tmp_path / "sheet.png") as sheet:
        assert sheet.size == (128, 192)
