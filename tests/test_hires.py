"""Hires fix: first pass, latent or pixel upscale, img2img second pass; sizes, steps and A1111's infotext keys."""

import numpy as np
import pytest
from PIL import Image

from pipelines.errors import RequestError
from pipelines.request import GenerationRequest


def hires(**values):
    return GenerationRequest(**{"prompt": "a red circle", "model": "tiny-sd", "width": 64, "height": 64, "steps": 4,
                                "seed": 9, "enable_hr": True, "denoising_strength": 0.5, **values})


@pytest.mark.parametrize("upscaler", ["Latent", "Latent (nearest)", "Lanczos", "Nearest"])
def test_hires_doubles_the_size_with_every_upscaler(engine, upscaler):
    steps = []
    result = engine.generate(hires(hr_upscaler=upscaler), on_progress=lambda e: steps.append(e.steps))
    assert result.images[0].size == (128, 128)
    assert set(steps) == {4, 2}  # first pass, then 4 x strength 0.5
    assert result.infotexts[0].endswith(
        f"Size: 64x64, Model hash: {result.infotexts[0].split('Model hash: ')[1][:10]}, Model: tiny-sd, "
        f"Denoising strength: 0.5, RNG: CPU, Hires upscale: 2, Hires upscaler: {upscaler}, Version: easel-0.1.0")


def test_hires_resize_steps_sampler_and_prompt(engine):
    steps = []
    request = hires(hr_resize_x=96, hr_second_pass_steps=3, hr_sampler_name="DPM++ 2M Karras", hr_prompt="a circle",
                    model="tiny-sdxl", batch_size=2)
    result = engine.generate(request, on_progress=lambda e: steps.append(e.steps))
    assert [image.size for image in result.images] == [(96, 96)] * 2
    assert steps[-1] == 3  # explicit hires steps are the steps run
    text = result.infotexts[0]
    assert "Hires resize: 96x96, Hires steps: 3, Hires upscaler: Latent, Hires sampler: DPM++ 2M, " \
           "Hires schedule type: Karras, Hires prompt: a circle" in text
    back = GenerationRequest.from_infotext(text)
    assert (back.enable_hr, back.hires_size, back.hr_second_pass_steps, back.hr_sampler_name) == \
        (True, (96, 96), 3, "DPM++ 2M")


def test_a_variation_seed_shapes_both_passes(engine):
    """A1111 draws the second pass's noise with the variation seed too: at strength 1 (Euler, deterministic; latents
    upscaled, so no picture is encoded) the picture is the variation seed's own (to rounding: one channel of one
    pixel differed by 1; the seed's picture is 41 apart on average)."""
    def picture(**values):
        return np.asarray(engine.generate(hires(sampler="Euler", **values)).images[0], dtype=np.int16)

    assert np.abs(picture(subseed=5, subseed_strength=1.0) - picture(seed=5)).max() <= 1


def test_a_given_first_pass_stands_for_the_first_pass(engine):
    """A1111's ``firstpass_image`` (its ✨ button): the picture the first pass makes, given, gives the same hires
    picture with only the second pass run; with a latent upscaler it is encoded first; another size is fitted to
    the request's."""
    first = engine.generate(hires(enable_hr=False, hr_upscaler="Lanczos")).images[0]
    whole = engine.generate(hires(hr_upscaler="Lanczos")).images[0]
    steps = []
    given = engine.generate(hires(hr_upscaler="Lanczos", firstpass_image=first),
                            on_progress=lambda e: steps.append(e.steps))
    assert given.images[0].tobytes() == whole.tobytes() and set(steps) == {2}  # the second pass alone
    latent = engine.generate(hires(firstpass_image=first.resize((96, 80)), batch_size=2))
    assert [image.size for image in latent.images] == [(128, 128)] * 2


def test_a_copy_before_the_hires_fix_is_saved_when_asked(engine):
    """A1111's save_images_before_highres_fix: each first-pass picture is saved too (the picture the job makes
    without the hires fix), named as the others with -before-highres-fix at the end, with the job's parameters;
    the job's own pictures are the hires ones."""
    from pipelines.infotext import read_infotext

    engine.save_before_hires = True
    try:
        result = engine.generate(hires(batch_size=2, seed=21))
    finally:
        engine.save_before_hires = False
    before = sorted(result.paths[0].parent.glob("*-before-highres-fix.png"))
    assert [path.name.split("-", 1)[1] for path in before] == ["21-before-highres-fix.png", "22-before-highres-fix.png"]
    assert [Image.open(path).size for path in result.paths] == [(128, 128)] * 2
    plain = engine.generate(hires(batch_size=2, seed=21, enable_hr=False))
    for path, picture in zip(before, plain.images):
        with Image.open(path) as saved:
            assert np.array_equal(np.asarray(saved), np.asarray(picture))
            assert "Seed: " in read_infotext(saved) and "Hires upscale: 2" in read_infotext(saved)
    folder = engine.generate(hires(seed=23)).paths[0].parent
    assert not list(folder.glob("*-23-before-highres-fix.png"))  # off: none


def test_interrupt_in_the_first_pass_returns_the_first_pass(engine):
    def on_progress(event):
        if event.step == 2:
            engine.interrupt()

    result = engine.generate(hires(steps=6), on_progress=on_progress)
    assert result.interrupted and result.images[0].size == (64, 64)


@pytest.mark.parametrize("values, message", [
    ({"hr_scale": 5}, "Hires upscale must be between 1 and 4"),
    ({"hr_sampler_name": "nope"}, "Unknown sampler 'nope'"),
    ({"hr_scale": 4, "width": 2048}, "The hires size 8192x256 is over 4096"),
    ({"denoising_strength": 0.1}, "runs no hires step"),
    ({"enable_hr": False, "firstpass_image": Image.new("RGB", (64, 64))}, "A first-pass image is hires fix's"),
])
def test_bad_hires_values(values, message):
    with pytest.raises(RequestError, match=message):
        hires(**{"height": 64, **values})


@pytest.fixture(scope="module")
def upscaler_engine(models_dir, tmp_path_factory):
    """tiny-sd plus both model upscalers and an upscaler file in the A1111 folder layout (models/upscalers/...,
    models/ESRGAN/tiny-x4.safetensors), and a file that is no upscaler beside it."""
    import shutil

    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter
    from pipelines.registry import Registry
    from pipelines.upscalers import MODEL_UPSCALERS, UPSCALER_DIR
    from training.tiny_random import build_tiny_upscaler, save_tiny_esrgan

    root = tmp_path_factory.mktemp("upscaler-models")
    shutil.copytree(models_dir / "Stable-diffusion" / "tiny-sd", root / "Stable-diffusion" / "tiny-sd")
    for name, kind in (("SD x4", "x4"), ("SD latent x2", "latent x2")):
        build_tiny_upscaler(kind).save_pretrained(root / UPSCALER_DIR / MODEL_UPSCALERS[name].folder)
    save_tiny_esrgan(root / "ESRGAN" / "tiny-x4.safetensors")
    (root / "ESRGAN" / "broken.pth").write_bytes(b"not a model")
    return Engine(Registry(root), OutputWriter(root / "out", enabled=False))


@pytest.mark.parametrize("upscaler", ["SD x4", "SD latent x2", "tiny-x4"])
def test_model_upscalers_run_when_their_weights_are_on_disk(upscaler_engine, upscaler):
    from pipelines.upscalers import upscaler_names

    assert upscaler in upscaler_names(upscaler_engine.registry.models_dir)
    first = upscaler_engine.generate(hires(hr_upscaler=upscaler, hr_scale=1.5, batch_size=2))
    second = upscaler_engine.generate(hires(hr_upscaler=upscaler, hr_scale=1.5, batch_size=2))
    assert [image.size for image in first.images] == [(96, 96)] * 2
    assert first.images[0].tobytes() == second.images[0].tobytes()  # seeded
    assert f"Hires upscaler: {upscaler}" in first.infotexts[0]
    loaded = {r["name"] for r in upscaler_engine.registry.resident()}
    assert "tiny-sd" in loaded and any(name.startswith("upscalers/") for name in loaded)  # one registry, one budget


def test_an_upscaler_file_upscales_by_seamless_tiles_and_a_bad_one_is_named(upscaler_engine):
    from pipelines.errors import ModelError, RequestError

    registry = upscaler_engine.registry
    with registry.lease(registry.resolve_upscaler("tiny-x4")) as upscaler:
        picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 72, 3), dtype=np.uint8))
        whole = upscaler.pipe.upscale(picture)
        upscaler.pipe.TILE = 16  # 15 tiles, each with 16 pixels of context
        try:
            tiled = upscaler.pipe.upscale(picture)
        finally:
            del upscaler.pipe.TILE
    assert whole.size == (288, 160) and np.array_equal(np.asarray(whole), np.asarray(tiled))
    with pytest.raises(ModelError, match="Could not read the upscaler broken.pth"):
        upscaler_engine.generate(hires(hr_upscaler="broken"))
    with pytest.raises(RequestError, match="Unknown upscaler 'ESRGAN'. Choose one of: Latent, .*, tiny-x4") as refused:
        upscaler_engine.generate(hires(hr_upscaler="ESRGAN"))
    assert refused.value.field == "hr_upscaler"


def test_a_model_upscaler_without_weights_says_where_they_go(engine):
    from pipelines.errors import ModelError
    from pipelines.upscalers import upscaler_names

    assert "SD x4" not in upscaler_names(engine.registry.models_dir)
    with pytest.raises(ModelError, match="put the diffusers folder of stabilityai/stable-diffusion-x4-upscaler at"):
        engine.generate(hires(hr_upscaler="SD x4"))
