"""Kandinsky 2.2 on a tiny random prior + decoder: catalog, family, offline loading, the three tasks, seeds,
image mixing, messages, infotext, and the REST API's ``mix`` field."""

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.engine import Engine
from pipelines.errors import ModelError, RequestError
from pipelines.infotext import parse_infotext
from pipelines.outputs import OutputWriter
from pipelines.registry import Registry
from pipelines.request import GenerationRequest

CATALOG = Path(__file__).resolve().parent.parent / "models" / "catalog.json"
NAME = "tiny-kandinsky"  # in the kandinsky_dir fixture (conftest)


@pytest.fixture(scope="module")
def registry(kandinsky_dir):
    return Registry(kandinsky_dir, device="cpu", catalog=CATALOG, offline=True)


@pytest.fixture
def engine(registry, tmp_path):
    return Engine(registry, OutputWriter(tmp_path / "outputs"), preview_every=2)


def make(**values):
    return GenerationRequest(**{"prompt": "a red circle", "model": NAME, "width": 64, "height": 64, "steps": 4,
                                "seed": 7, "sampler": "DDPM", "cfg_scale": 4.0, **values})


def pixels(image):
    return np.asarray(image, dtype=np.int16)


def picture(colour=(200, 40, 40), size=(64, 64)):
    return Image.new("RGB", size, colour)


# -- catalog and registry --------------------------------------------------------------------------------------

def test_the_catalog_lists_kandinsky_with_the_model_cards_presets(registry):
    info = registry.resolve("kandinsky-2.2")
    assert (info.source, info.prior, info.family, info.local) == (
        "kandinsky-community/kandinsky-2-2-decoder", "kandinsky-community/kandinsky-2-2-prior", "kandinsky22", False)
    assert {k: info.defaults[k] for k in ("width", "height", "steps", "cfg_scale", "sampler")} == \
        {"width": 768, "height": 768, "steps": 50, "cfg_scale": 4.0, "sampler": "DDPM"}
    assert registry.resolve("koala-700m").family == "sdxl"  # the other entries still parse
    GenerationRequest.from_values(dict(info.defaults))


def test_a_local_folder_is_detected_and_loads_offline_with_prior_modules_counted(registry):
    info = registry.resolve(NAME)
    assert info.family == "kandinsky22" and info.local
    assert (info.defaults["width"], info.defaults["steps"], info.defaults["sampler"]) == (64, 4, "DDPM")
    with registry.lease(NAME) as model:
        pipe = model.pipe
        assert type(pipe).__name__ == "KandinskyV22CombinedPipeline"
        prior_bytes = sum(p.numel() * p.element_size() for p in pipe.prior_prior.parameters())
        decoder_bytes = sum(p.numel() * p.element_size() for p in pipe.unet.parameters())
        text_bytes = sum(p.numel() * p.element_size() for p in pipe.prior_text_encoder.parameters())
        assert model.nbytes >= prior_bytes + decoder_bytes + text_bytes
        assert len(model.hash) == 10
        for task, cls in (("img2img", "KandinskyV22Img2ImgCombinedPipeline"),
                          ("inpaint", "KandinskyV22Img2ImgCombinedPipeline")):  # inpaint blends latents
            variant = model.pipeline(task)
            assert type(variant).__name__ == cls
            assert variant.unet is pipe.unet and variant.prior_prior is pipe.prior_prior
    assert any(r["name"] == NAME for r in registry.resident())


def test_a_decoder_folder_without_its_prior_is_refused_with_the_layout(kandinsky_dir, tmp_path):
    folder = tmp_path / "Stable-diffusion" / "decoder-only"
    shutil.copytree(kandinsky_dir / "Stable-diffusion" / NAME, folder,
                    ignore=shutil.ignore_patterns("prior_*"))
    index = json.loads((folder / "model_index.json").read_text())
    index = {k: v for k, v in index.items() if not k.startswith("prior_")}
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "KandinskyV22Pipeline"}))
    registry = Registry(tmp_path, offline=True)
    assert registry.resolve("decoder-only").family == "kandinsky22"
    with pytest.raises(ModelError, match="KandinskyV22Pipeline without its prior: put a combined Kandinsky 2.2"):
        with registry.lease("decoder-only"):
            pass


# -- generation ------------------------------------------------------------------------------------------------

def test_txt2img_same_seed_same_picture_other_seed_another(engine):
    first, again, other = engine.generate(make()), engine.generate(make()), engine.generate(make(seed=8))
    assert first.images[0].size == (64, 64)
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))
    assert np.abs(pixels(first.images[0]) - pixels(other.images[0])).mean() > 1


@pytest.mark.parametrize("option, label", [({"step_cache": 2}, "Step cache: 2"), ({"tiling": True}, "Tiling: True")])
def test_step_cache_and_tiling_apply_to_the_decoder_and_leave_no_residue(engine, option, label):
    before = engine.generate(make(steps=6))
    changed = engine.generate(make(steps=6, **option))
    after = engine.generate(make(steps=6))
    assert label in changed.infotexts[0]
    assert not np.array_equal(pixels(changed.images[0]), pixels(before.images[0]))
    assert np.array_equal(pixels(after.images[0]), pixels(before.images[0]))


def test_batch_image_i_equals_a_single_run_with_seed_plus_i(engine):
    batch = engine.generate(make(seed=20, batch_size=2, negative_prompt="blurry"))
    assert batch.seeds == [20, 21] and [i.size for i in batch.images] == [(64, 64)] * 2
    for image, seed in zip(batch.images, batch.seeds):
        single = engine.generate(make(seed=seed, negative_prompt="blurry")).images[0]
        assert np.abs(pixels(image) - pixels(single)).max() <= 2


def test_negative_prompt_and_other_sizes_change_the_picture(engine):
    base = pixels(engine.generate(make()).images[0])
    assert not np.array_equal(base, pixels(engine.generate(make(negative_prompt="green")).images[0]))
    assert engine.generate(make(width=128, height=64)).images[0].size == (128, 64)


def test_img2img_and_inpaint_keep_the_size_and_the_unmasked_pixels(engine):
    source = picture()
    img2img = engine.generate(make(task="img2img", init_image=source, denoising_strength=0.5, width=128))
    assert img2img.images[0].size == (128, 64)
    assert "Denoising strength: 0.5" in img2img.infotexts[0]
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpaint = engine.generate(make(task="inpaint", init_image=source, mask=mask, mask_blur=0,
                                   denoising_strength=1.0))
    out = pixels(inpaint.images[0])
    assert inpaint.images[0].size == (64, 64)
    assert np.array_equal(out[:8], pixels(source)[:8])  # outside the mask: the original, exactly
    assert np.abs(out[24:40, 24:40] - pixels(source)[24:40, 24:40]).mean() > 5  # inside: repainted
    with pytest.raises(RequestError, match="Soft inpainting is not available for Kandinsky"):
        engine.generate(make(task="inpaint", init_image=source, mask=mask, soft_inpainting=True))


def test_loopback_and_sd_upscale_run_the_decoder_per_loop_and_per_tile(engine):
    source = picture()
    loops = engine.generate(make(task="img2img", init_image=source, loopback=True, loopback_loops=2,
                                 denoising_strength=0.5))
    second = engine.generate(make(task="img2img", init_image=loops.images[0], denoising_strength=0.5, seed=8))
    assert loops.seeds == [7, 8] and np.abs(pixels(loops.images[1]) - pixels(second.images[0])).max() <= 2
    tiles = engine.generate(make(task="img2img", init_image=source, sd_upscale=True, sd_upscale_overlap=0,
                                 batch_size=2, denoising_strength=0.5))  # 4 tiles of 64, 2 a pass
    single = engine.generate(make(task="img2img", init_image=source, denoising_strength=0.5, seed=9))
    assert tiles.images[0].size == (128, 128)
    difference = np.abs(pixels(tiles.images[0])[64:, :64] - pixels(single.images[0]))  # tile 2: seed + 2
    assert difference.mean() < 0.5 and difference.max() <= 4  # batched against alone: rounding only


def test_progress_shows_the_decoders_steps_with_previews_and_interrupt_stops(engine):
    events = []
    engine.generate(make(steps=4), on_progress=events.append)
    assert [e.step for e in events] == [1, 2, 3, 4] and events[-1].fraction == 1.0
    assert [e.preview.size for e in events if e.preview is not None] == [(8, 8)]
    stopped = []

    def stop_after_two(progress):
        stopped.append(progress.step)
        if progress.step == 2:
            engine.interrupt()

    result = engine.generate(make(steps=6, batch_count=2), on_progress=stop_after_two)
    assert result.interrupted and stopped == [1, 2] and len(result.images) == 1
    assert result.images[0].size == (64, 64)


def test_a1111_weights_are_read_as_plain_text_with_a_warning(engine):
    weighted = engine.generate(make(prompt="a (red:1.3) [circle]"))
    plain = engine.generate(make(prompt="a red circle"))
    assert np.array_equal(pixels(weighted.images[0]), pixels(plain.images[0]))
    assert any("plain text" in w for w in weighted.warnings) and not plain.warnings


def test_infotext_has_the_a1111_keys_the_model_and_its_hash(engine):
    result = engine.generate(make(negative_prompt="blurry"))
    prompt, negative, params = parse_infotext(result.infotexts[0])
    assert (prompt, negative) == ("a red circle", "blurry")
    assert {k: params[k] for k in ("Steps", "Sampler", "CFG scale", "Seed", "Size", "Model")} == \
        {"Steps": "4", "Sampler": "DDPM", "CFG scale": "4", "Seed": "7", "Size": "64x64", "Model": NAME}
    assert len(params["Model hash"]) == 10


# -- image mixing ----------------------------------------------------------------------------------------------

def test_mixing_two_prompts_with_weights_1_and_0_equals_the_single_prompt(engine):
    single = engine.generate(make(prompt="a red circle"))
    mixed = engine.generate(make(mix=[{"prompt": "a red circle", "weight": 1.0},
                                      {"prompt": "a blue square", "weight": 0.0}]))
    assert np.abs(pixels(single.images[0]) - pixels(mixed.images[0])).max() <= 1
    assert "Image mix: \"a red circle: 1, a blue square: 0\"" in mixed.infotexts[0]


def test_mixing_a_prompt_and_a_picture_changes_with_the_weights(engine):
    def mixed(weight):
        return pixels(engine.generate(make(mix=[{"prompt": "a red circle", "weight": 1 - weight},
                                                {"image": picture((20, 20, 220)), "weight": weight}])).images[0])

    assert not np.array_equal(mixed(0.2), mixed(0.8))
    assert np.array_equal(mixed(0.5), mixed(0.5))


@pytest.mark.parametrize("mix, message", [
    ([{"weight": 1}], "needs either a prompt or an image"),
    ([{"prompt": "a", "image": Image.new("RGB", (8, 8))}], "exactly one of them"),
    ([{"prompt": "a", "weight": "heavy"}], "weight must be a number"),
    ([{"prompt": "a", "weight": float("nan")}], "finite"),
    ([{"prompt": "a", "weight": 0}], "add up to more than 0"),
    ([{"image": "not a picture"}], "must be a picture"),
    ([{"prompt": "a"}] * 9, "at most 8"),
    ("a cat", "must be a list"),
])
def test_bad_mix_input_gets_a_clear_message(mix, message):
    with pytest.raises(RequestError, match=message) as caught:
        make(mix=mix)
    assert caught.value.field == "mix"


def test_mixing_or_unusable_options_on_the_wrong_model_are_refused(engine):
    with pytest.raises(RequestError, match="Image mixing needs a Kandinsky 2.2 model; tiny-sd is not one"):
        engine.generate(make(model="tiny-sd", sampler="Euler", mix=[{"prompt": "a", "weight": 1}]))
    for sampler in ("Euler a", "UniPC"):  # one scales the UNet's input, the other's step takes no generator
        with pytest.raises(RequestError, match=f"Sampler '{sampler}' cannot drive Kandinsky 2.2's decoder. Use one "
                                               "of: DPM.. 2M, DPM.. 2M SDE, DDIM, DDPM, LCM."):
            engine.generate(make(sampler=sampler))
    with pytest.raises(RequestError, match="Hires fix is not available"):
        engine.generate(make(enable_hr=True))
    with pytest.raises(RequestError, match="A refiner is not available for Kandinsky 2.2"):
        engine.generate(make(refiner_checkpoint="tiny-sd"))
    with pytest.raises(RequestError, match="tiny-kandinsky cannot be a refiner"):
        engine.generate(make(model="tiny-sd", sampler="Euler", refiner_checkpoint="tiny-kandinsky"))
    with pytest.raises(RequestError, match="LoRA and hypernetworks do not apply"):
        engine.generate(make(prompt="a <lora:x:1>"))
    with pytest.raises(RequestError, match=r"Composable prompts \(AND\) are not available for Kandinsky 2.2"):
        engine.generate(make(prompt="a cat AND a dog"))
    with pytest.raises(RequestError, match="Regional Prompter is not available for Kandinsky 2.2"):
        engine.generate(make(prompt="a cat BREAK a dog", regional_prompter=True))
    for field, value in (("rescale_cfg", 0.7), ("freeu", True), ("pag_scale", 3), ("sag_scale", 0.5),
                         ("tiled_diffusion", True), ("deep_shrink", True)):
        with pytest.raises(RequestError, match=" is not available for Kandinsky 2.2") as caught:
            engine.generate(make(**{field: value}))
        assert caught.value.field == field
    with pytest.raises(RequestError, match="multiples of 64 pixels; 72x64 is not one"):  # 8x8 latent blocks
        engine.generate(make(width=72))


def test_variation_seeds_seed_resize_and_the_noise_multiplier_shape_the_decoders_noise(engine):
    """As for SD: variation strength 1 starts from the variation seed's noise (with DDIM, deterministic, nearly its
    picture: the prior's image embedding stays the seed's), a small strength is a small change; seed resize and
    img2img's noise multiplier change the picture; the infotext records them; inpainting varies the masked part
    and keeps the rest."""
    def drawn(**values):
        result = engine.generate(make(sampler="DDIM", **values))
        return pixels(result.images[0]), result.infotexts[0]

    plain, _ = drawn()
    other, _ = drawn(seed=5)
    varied, infotext = drawn(subseed=5, subseed_strength=1.0)
    assert np.abs(varied - other).mean() < np.abs(plain - other).mean() / 4, "not the variation seed's start"
    assert "Variation seed: 5, Variation seed strength: 1," in infotext
    seeds_apart = np.abs(plain - other).mean()  # 114: this tiny decoder is far more sensitive than tiny-sd
    small, half = (np.abs(drawn(subseed=5, subseed_strength=s)[0] - plain).mean() for s in (0.001, 0.5))
    assert small < seeds_apart / 20 < seeds_apart / 4 < half, (small, half, seeds_apart)  # 0.8, 88
    resized, infotext = drawn(seed_resize_from_w=128, seed_resize_from_h=128)
    assert np.abs(resized - plain).mean() > 1 and "Seed resize from: 128x128" in infotext
    source = {"task": "img2img", "init_image": picture(), "denoising_strength": 0.75}
    same, multiplied = drawn(**source)[0], drawn(**source, initial_noise_multiplier=0.5)
    assert np.abs(multiplied[0] - same).mean() > 1 and "Noise multiplier: 0.5" in multiplied[1]
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    masked = {**source, "task": "inpaint", "mask": mask, "mask_blur": 0}
    inpainted, varied = drawn(**masked)[0], drawn(**masked, subseed=5, subseed_strength=0.5)[0]
    assert np.array_equal(varied[:8], pixels(source["init_image"])[:8])  # outside the mask: the original
    assert np.abs(varied[24:40, 24:40] - inpainted[24:40, 24:40]).mean() > 1  # the masked part's noise varied


def test_other_decoder_friendly_samplers_run(engine):
    for sampler in ("DDIM", "DPM++ 2M", "DPM++ 2M SDE"):
        assert engine.generate(make(sampler=sampler)).images[0].size == (64, 64)


# -- REST API ----------------------------------------------------------------------------------------------------

def test_the_api_takes_a_mix_and_names_the_field_of_a_bad_one(kandinsky_dir, tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    import app
    from api.routes import create_router
    from pipelines.services import Services

    args = app.parse_args(["--models-dir", str(kandinsky_dir), "--outputs-dir", str(tmp_path), "--default-model",
                           NAME, "--device", "cpu", "--ui-settings-file", str(tmp_path / "config.json"),
                           "--ui-config-file", str(tmp_path / "ui-config.json")])
    server = FastAPI()
    server.include_router(create_router(Services.build(app.settings_from_args(args))))
    client = TestClient(server)
    buffer = io.BytesIO()
    picture((20, 20, 220)).save(buffer, format="PNG")
    body = {"prompt": "a red circle", "steps": 3, "width": 64, "height": 64, "seed": 3, "sampler_name": "DDPM",
            "cfg_scale": 4, "mix": [{"prompt": "a red circle", "weight": 0.5},
                                    {"image": base64.b64encode(buffer.getvalue()).decode(), "weight": 0.5}]}
    answer = client.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    assert "Image mix" in json.loads(answer.json()["info"])["infotexts"][0]
    bad = client.post("/sdapi/v1/txt2img", json={**body, "mix": [{"prompt": "a", "weight": 0}]})
    assert bad.status_code == 422 and bad.json()["field"] == "mix"
