"""The easel-shapes training loop, on a tiny copy of the architecture: it runs, it writes a folder
that StableDiffusionPipeline loads on its own, a run stopped by its time budget resumes into
exactly the run that was not stopped, and a fine-tune starts from a saved model."""

import json
import random
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from training.architecture import Config
from training.evaluate import IMG2IMG_STRENGTHS, evaluate, evaluate_img2img
from training.shapes import caption, sample_scene
from training.train import _captions, train

TINY = Config(
    norm_groups=4,
    vae_channels=(8, 16),
    vae_steps=2,
    vae_batch=2,
    text_hidden=8,
    text_layers=1,
    text_heads=2,
    unet_channels=(8, 16),
    unet_heads=2,
    unet_steps=2,
    unet_batch=2,
    warmup_steps=1,
    pool_size=4,
    checkpoint_every=1,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    assert train(TINY, root / "out", root / "work", minutes=10, device="cpu")
    return root


def test_training_writes_a_loadable_stable_diffusion_folder(trained):
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    out = trained / "out"
    pipe = StableDiffusionPipeline.from_pretrained(out)
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert isinstance(pipe.scheduler, EulerAncestralDiscreteScheduler)
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"
    assert pipe.tokenizer.model_max_length == 77
    assert pipe.tokenizer("a red circle").input_ids[0] == 49406
    assert pipe.text_encoder.config.vocab_size == 49408
    assert pipe.vae.config.latent_channels == 4
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    # Stored in fp16 for size, loaded as fp32 for the CPU.
    assert all(t.dtype == torch.float16 for t in load_file(out / "unet" / "diffusion_pytorch_model.safetensors").values())
    assert pipe.text_encoder.dtype == pipe.unet.dtype == pipe.vae.dtype == torch.float32
    assert json.loads((out / "model_index.json").read_text())["requires_safety_checker"] is False
    image = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)


def test_stopped_run_resumes_into_the_uninterrupted_one(trained, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    assert not train(TINY, out, work, minutes=0)  # out of time right after the first step
    saved = torch.load(work / "checkpoint.pt", weights_only=False)
    assert (saved["phase"], saved["step"]) == ("vae", 1)
    assert not (out / "model_index.json").exists()

    assert train(TINY, out, work, minutes=10, resume=True, device=torch.device("cpu"))  # a str or a torch.device
    assert torch.load(work / "checkpoint.pt", weights_only=False)["phase"] == "done"
    for part in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        resumed, straight = load_file(out / part), load_file(trained / "out" / part)
        assert resumed.keys() == straight.keys()
        assert all(torch.allclose(resumed[k].float(), straight[k].float(), atol=1e-3) for k in resumed), part


def test_evaluation_runs_on_a_trained_folder(trained, tmp_path):
    import shutil

    folder = tmp_path / "Stable-diffusion" / "tiny-shapes"  # evaluation goes through the app's model registry
    shutil.copytree(trained / "out", folder)
    result = evaluate(folder, n_prompts=2, seeds=(0,))
    assert result["pictures"] == 2
    assert set(result["accuracy"]) == {"colour", "shape", "position", "background", "size"}
    assert all(0.0 <= v <= 1.0 for v in result["accuracy"].values())
    assert result["seconds_per_picture"] > 0
    img2img = evaluate_img2img(folder, n_prompts=2)
    assert set(img2img) == set(IMG2IMG_STRENGTHS)
    assert all(set(r["kept"]) == {"colour", "shape", "background"} and 0 <= r["followed"] <= 1
               for r in img2img.values())


def test_a_fine_tune_starts_from_the_saved_model_and_keeps_its_autoencoder(trained, tmp_path):
    source = trained / "out"
    out, work = tmp_path / "out", tmp_path / "work"
    assert train(replace(TINY, caption_swap=1.0), out, work, minutes=10, init_from=source)
    assert torch.load(work / "checkpoint.pt", weights_only=False)["fine_tune_of"] == str(source)
    vae = "vae/diffusion_pytorch_model.safetensors"
    assert all(torch.equal(a, b) for a, b in zip(load_file(out / vae).values(), load_file(source / vae).values()))
    assert json.loads((out / "vae/config.json").read_text())["scaling_factor"] == \
        json.loads((source / "vae/config.json").read_text())["scaling_factor"]
    unet = "unet/diffusion_pytorch_model.safetensors"
    tuned, before = load_file(out / unet), load_file(source / unet)
    moved = max((tuned[k].float() - before[k].float()).abs().max().item() for k in tuned)
    assert 0 < moved < 0.02, moved  # two small steps from the saved weights, not a fresh start


def test_caption_swap_gives_low_noise_steps_other_captions_and_leaves_the_rest_as_before():
    scenes = [sample_scene(random.Random(i), 0.0) for i in range(64)]
    idx = list(range(64))
    old = random.Random(0)  # the captions of runs before the swap existed
    before = ["" if old.random() < TINY.caption_dropout else caption(scenes[i], old) for i in idx]
    assert _captions(TINY, scenes, idx, [0] * 64, random.Random(0)) == before  # no swap by default
    swapping = replace(TINY, caption_swap=1.0, caption_dropout=0.0, caption_swap_below=400)
    own = _captions(replace(swapping, caption_swap=0.0), scenes, idx, [0] * 64, random.Random(1))
    assert _captions(swapping, scenes, idx, [400] * 64, random.Random(1)) == own  # noisier steps: their own
    swapped = _captions(swapping, scenes, idx, [399] * 64, random.Random(1))
    assert sum(a != b for a, b in zip(swapped, own)) > 48, swapped
