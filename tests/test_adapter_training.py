"""The adapter trainers for the embedded model run for a few steps and write what the app loads: the Canny
ControlNet, the textual-inversion embedding, and the KOALA-style student (blocks removed, the teacher's text
encoder and VAE linked, its attention weights kept). The frozen-pipeline helpers they share are checked too."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
TEACHER = ROOT / "models" / "Stable-diffusion" / "easel-shapes"
if not (TEACHER / "model_index.json").is_file():
    pytest.skip("the embedded model is not in models/", allow_module_level=True)


def test_pixels_and_step_random():
    from training.frozen import pixels, step_random

    picture = Image.fromarray(np.array([[[0, 255, 51]]], dtype=np.uint8))
    assert pixels([picture]).flatten().tolist() == pytest.approx([-1.0, 1.0, -0.6])
    assert pixels([picture], low=0.0).flatten().tolist() == pytest.approx([0.0, 1.0, 0.2])
    (r1, g1), (r2, g2) = step_random("x", 0, 3), step_random("x", 0, 3)
    assert r1.random() == r2.random() and torch.equal(torch.rand(2, generator=g1), torch.rand(2, generator=g2))


def test_a_few_controlnet_steps_write_a_controlnet_folder(tmp_path):
    from diffusers import ControlNetModel

    from training.controlnet import train

    out = tmp_path / "ControlNet" / "test"
    train(TEACHER, out, steps=2, batch=2, lr=1e-3)
    assert ControlNetModel.from_pretrained(out).config.cross_attention_dim == 64


def test_a_few_embedding_steps_write_an_a1111_embedding(tmp_path):
    from safetensors.torch import load_file

    from training.embedding import train

    out = tmp_path / "embeddings" / "word.safetensors"
    train(TEACHER, out, steps=2, batch=2, lr=1e-2)
    assert load_file(out)["emb_params"].shape == (4, 64)


def test_the_embedding_evaluation_scores_the_file_it_is_given(tmp_path):
    """Not the one in models/embeddings: a file of zero vectors elsewhere means nothing."""
    from safetensors.torch import save_file

    from training.embedding import evaluate

    blank = tmp_path / "blank.safetensors"
    save_file({"emb_params": torch.zeros(4, 64)}, blank)
    assert evaluate(TEACHER, ROOT / "models" / "embeddings" / "easel-sunset.safetensors", n=4)["concept"] >= 0.75
    assert evaluate(TEACHER, blank, n=4)["concept"] <= 0.25


def test_a_few_distillation_steps_make_a_loadable_student(tmp_path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from training.distill import build_student, train

    teacher = UNet2DConditionModel.from_pretrained(TEACHER / "unet")
    student = build_student(teacher)
    assert student.mid_block is None and student.config.block_out_channels == [16, 32, 128]
    kept = student.down_blocks[2].attentions[0].proj_in.weight
    assert torch.equal(kept, teacher.down_blocks[2].attentions[0].proj_in.weight)

    out = tmp_path / "Stable-diffusion" / "student"
    out.mkdir(parents=True)
    (out / "README.md").write_text("the card")
    for _ in range(2):  # training again replaces the UNet and the links, and keeps the card
        train(TEACHER, out, steps=2, batch=2, lr=1e-3, feature_weight=1.0)
    assert (out / "text_encoder").is_symlink() and (out / "vae").resolve() == (TEACHER / "vae").resolve()
    assert (out / "README.md").read_text() == "the card"
    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
    assert pipe.unet.mid_block is None
    assert sum(p.numel() for p in pipe.unet.parameters()) < 0.7 * sum(p.numel() for p in teacher.parameters())
