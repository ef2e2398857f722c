"""IP-Adapter units: diffusers' pictures exactly (plain and Plus), weight and control steps, the UNet left as it was,
files and encoders on disk, refusals that say what to pick, and the extension's API."""

import base64
import io
import shutil

import httpx
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from pipelines.controlnet import Controls
from pipelines.engine import Engine
from pipelines.errors import ModelError, RequestError
from pipelines.generate import run_pipeline
from pipelines.ip_adapter import ImagePrompt, IPAdapter, encode, nested, read_adapter, read_encoder
from pipelines.outputs import OutputWriter
from pipelines.preprocessors import Preprocessors, unavailable_reason
from pipelines.region_mask import RegionMask
from pipelines.registry import Registry
from pipelines.request import GenerationRequest
from training.tiny_random import build_tiny_image_encoder, build_tiny_sd, build_tiny_sdxl, tiny_ip_adapter

SMALL = dict(prompt="a red circle", width=64, height=64, steps=4, seed=3)
ADAPTER = "ip-adapter_tiny-sd"


def _picture(colour="red") -> Image.Image:
    image = Image.new("RGB", (96, 64), "white")
    ImageDraw.Draw(image).ellipse((24, 8, 72, 56), fill=colour)
    return image


def _unit(**values) -> dict:
    return {"model": ADAPTER, "module": "ip-adapter_clip_h", "image": _picture(), **values}


def _latents(pipe, prompts=(), **values) -> torch.Tensor:
    request = GenerationRequest(**{"prompt": "a red circle", "negative_prompt": "blue", "steps": 4, "width": 64,
                                   "height": 64, "cfg_scale": 5.0, "sampler": "Euler", **values})
    return run_pipeline(pipe, request, [1, 2], latent_output=True,
                        controls=Controls((), (), (), tuple(prompts)) if prompts else None)


@pytest.mark.parametrize("build, plus", [(build_tiny_sd, False), (build_tiny_sd, True), (build_tiny_sdxl, False)],
                         ids=["sd-plain", "sd-plus", "sdxl-plain"])
def test_a_pass_makes_the_pictures_of_diffusers_load_ip_adapter(build, plus):
    """Plain adapters read the image embedding, Plus ones the penultimate hidden states (and a black picture's for
    the unprompted half); both exactly as diffusers' own IP-Adapter pipelines, and the UNet is its own after."""
    pipe, encoder = build(), build_tiny_image_encoder()
    state = nested(tiny_ip_adapter(pipe.unet, encoder, plus=plus))
    adapter = IPAdapter(state, "tiny")
    prompt = ImagePrompt(adapter, *encode(encoder, adapter, _picture()))
    plain, ours = _latents(pipe), _latents(pipe, [prompt])
    reference = type(pipe)(**{**pipe.components, "unet": build().unet, "image_encoder": encoder})
    reference.load_ip_adapter(state, subfolder=None, weight_name=None)
    theirs = reference(prompt="a red circle", negative_prompt="blue", num_inference_steps=4, width=64, height=64,
                       guidance_scale=5.0, num_images_per_prompt=2, ip_adapter_image=_picture(), output_type="latent",
                       generator=[torch.Generator().manual_seed(seed) for seed in (1, 2)]).images
    assert (ours - theirs).abs().max() == 0 < (plain - theirs).abs().max()
    assert pipe.unet.encoder_hid_proj is None and pipe.unet.config.encoder_hid_dim_type is None
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"AttnProcessor2_0"}
    assert torch.equal(_latents(pipe), plain)
    unguided = _latents(pipe, [prompt], cfg_scale=1.0)  # no unprompted half: the prompted encodings alone
    assert (unguided - _latents(pipe, cfg_scale=1.0)).abs().max() > 0.1


def test_the_weight_and_the_control_steps():
    pipe, encoder = build_tiny_sd(), build_tiny_image_encoder()
    adapter = IPAdapter(nested(tiny_ip_adapter(pipe.unet, encoder)), "tiny")
    encodings = encode(encoder, adapter, _picture())

    def made(**values):
        return _latents(pipe, [ImagePrompt(adapter, *encodings, **values)])

    plain, whole = _latents(pipe), made()
    assert torch.equal(made(weight=0.0), plain)
    assert torch.equal(made(end=0.2), plain)  # ends before the first of 4 steps does
    half = made(start=0.5)
    assert (half - plain).abs().max() > 0.01 and (half - whole).abs().max() > 0.01
    stronger = made(weight=2.0)
    assert (stronger - plain).abs().mean() > (whole - plain).abs().mean()


def test_an_effective_region_mask_keeps_the_adapter_to_its_region():
    """The ControlNet extension's effective region mask, as diffusers' ``ip_adapter_masks``: black, the latents
    without the adapter; white, the adapter's own; white on the left only, the adapter's change there."""
    pipe, encoder = build_tiny_sd(), build_tiny_image_encoder()
    adapter = IPAdapter(nested(tiny_ip_adapter(pipe.unet, encoder)), "tiny")
    encodings = encode(encoder, adapter, _picture())

    def made(left: int, right: int):
        mask = Image.new("L", (64, 64), right)
        mask.paste(left, (0, 0, 32, 64))
        return _latents(pipe, [ImagePrompt(adapter, *encodings, mask=RegionMask(mask))])

    plain, whole = _latents(pipe), _latents(pipe, [ImagePrompt(adapter, *encodings)])
    assert (made(0, 0) - plain).abs().max() < 1e-5
    assert (made(255, 255) - whole).abs().max() < 1e-4
    changed = (made(255, 0) - plain).abs().mean(dim=(0, 1, 2))  # by latent column
    half = len(changed) // 2
    assert changed[:half].mean() > 2 * changed[half:].mean(), changed
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"AttnProcessor2_0"}


def test_two_adapters_and_a_blue_picture_against_a_red_one():
    pipe, encoder = build_tiny_sd(), build_tiny_image_encoder()
    first = IPAdapter(nested(tiny_ip_adapter(pipe.unet, encoder, seed=1)), "first")
    second = IPAdapter(nested(tiny_ip_adapter(pipe.unet, encoder, plus=True, seed=2)), "second")
    red, blue = (ImagePrompt(first, *encode(encoder, first, _picture(colour))) for colour in ("red", "blue"))
    assert (_latents(pipe, [red]) - _latents(pipe, [blue])).abs().max() > 0.01  # the picture is read
    both = _latents(pipe, [red, ImagePrompt(second, *encode(encoder, second, _picture()))])
    assert (both - _latents(pipe, [red])).abs().max() > 0.01
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"AttnProcessor2_0"}


# -- in the engine ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine(registry, tmp_path_factory):
    return Engine(registry, OutputWriter(tmp_path_factory.mktemp("out"), enabled=False))


def _pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=float)


def test_a_unit_with_an_ip_adapter_in_the_engine(engine):
    assert engine.registry.resolve_controlnet(ADAPTER).kind == "ip-adapter"
    plain = engine.generate(GenerationRequest(**SMALL), save=False)
    made = engine.generate(GenerationRequest(**SMALL, controlnets=[_unit()]), save=False)
    assert np.abs(_pixels(made) - _pixels(plain)).max() > 10
    assert 'ControlNet 0: "Module: ip-adapter_clip_h, Model: ip-adapter_tiny-sd [' in made.infotexts[0]
    legacy = engine.generate(GenerationRequest(**SMALL, controlnets=[_unit(module="ip-adapter_clip_sd15")]), save=False)
    assert np.array_equal(_pixels(legacy), _pixels(made))  # the extension's earlier module name
    zero = engine.generate(GenerationRequest(**SMALL, controlnets=[_unit(weight=0.0)]), save=False)
    assert np.array_equal(_pixels(zero), _pixels(plain))
    assert np.array_equal(_pixels(engine.generate(GenerationRequest(**SMALL), save=False)), _pixels(plain))


def test_img2img_reads_the_init_picture_and_everything_else_runs_beside(engine):
    init = _picture("blue")
    img2img = dict(SMALL, task="img2img", init_image=init, denoising_strength=0.7)
    own = engine.generate(GenerationRequest(**img2img, controlnets=[_unit(image=None)]), save=False)
    given = engine.generate(GenerationRequest(**img2img, controlnets=[_unit(image=init)]), save=False)
    assert np.array_equal(_pixels(own), _pixels(given))
    control = {"model": "tiny-sd-control", "module": "canny", "image": _picture()}
    busy = engine.generate(GenerationRequest(**dict(SMALL, prompt="a red circle AND a blue square"), pag_scale=2,
                                             rescale_cfg=0.5, s_min_uncond=2, enable_hr=True, hr_scale=1.5,
                                             controlnets=[_unit(), control]), save=False)
    assert busy.images[0].size == (96, 96) and "ControlNet 1" in busy.infotexts[0]


@pytest.mark.parametrize("unit, message", [
    (_unit(module="canny"), "is an IP-Adapter; pick an ip-adapter_clip preprocessor"),
    (_unit(model="tiny-sd-control"), "preprocessor is for IP-Adapter models"),
    (_unit(module="ip-adapter_clip_g"), r"needs the CLIP image encoder clip_g in .*clip_vision.*sdxl_models"),
])
def test_wrong_pairs_say_what_to_pick(engine, unit, message):
    with pytest.raises(RequestError, match=message):
        engine.generate(GenerationRequest(**SMALL, controlnets=[unit]), save=False)


def test_an_adapter_of_another_family_is_refused(engine):
    with pytest.raises(RequestError, match="was made for another kind of model than 'tiny-sdxl'.*read text 8 wide"):
        engine.generate(GenerationRequest(**dict(SMALL, model="tiny-sdxl"), controlnets=[_unit()]), save=False)


# -- files -----------------------------------------------------------------------------------------------------

def test_encoder_files_adapter_files_and_what_is_refused(models_dir, tmp_path):
    """An encoder as one .safetensors (ComfyUI's file names) reads as its folder does; a .bin adapter as its
    .safetensors; an encoder of the wrong width and a FaceID adapter are refused by name."""
    folder = models_dir / "clip_vision" / "clip_h"
    encoder = read_encoder(folder, torch.float32)
    single = tmp_path / "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
    save_file(dict(encoder.state_dict()), single)
    adapter = read_adapter(models_dir / "ControlNet" / f"{ADAPTER}.safetensors", torch.float32)
    from_file = encode(read_encoder(single, torch.float32), adapter, _picture())
    assert all(torch.equal(a, b) for a, b in zip(from_file, encode(encoder, adapter, _picture())))

    pickled = tmp_path / "ip-adapter.bin"
    torch.save(nested(tiny_ip_adapter(build_tiny_sd().unet, encoder)), pickled)
    assert torch.equal(read_adapter(pickled, torch.float32).keys[0].weight, adapter.keys[0].weight)
    wide = build_tiny_image_encoder()
    wide.config.projection_dim = 32
    with pytest.raises(RequestError, match="reads CLIP image encodings 16 wide.*gives 32"):
        adapter.check_encoder(wide, "ip-adapter_clip_g")
    with pytest.raises(ModelError, match="FaceID"):
        IPAdapter({"image_proj": {"norm.weight": torch.ones(8)}, "ip_adapter": {}}, "faceid")
    with pytest.raises(ModelError, match="is not a CLIP image encoder"):
        save_file({"x": torch.zeros(1)}, tmp_path / "bad.safetensors")
        read_encoder(tmp_path / "bad.safetensors", torch.float32)

    root = tmp_path / "models"  # the encoder under ComfyUI's name is found, and offered as the module
    shutil.copytree(models_dir / "Stable-diffusion" / "tiny-sd", root / "Stable-diffusion" / "tiny-sd")
    (root / "clip_vision").mkdir()
    shutil.copy(single, root / "clip_vision")
    assert unavailable_reason(root, "ip-adapter_clip_h") is None
    assert Registry(root, default_model="tiny-sd").resolve_image_encoder("ip-adapter_clip_h").source == \
        str(root / "clip_vision" / single.name)


def test_the_preview_is_the_square_the_encoder_reads(models_dir):
    shown = Preprocessors(models_dir).run("ip-adapter_clip_h", _picture())
    assert shown.size == (224, 224)
    assert np.asarray(shown)[112, 112].tolist() == [255, 0, 0]  # the circle in the middle of the wide picture


# -- over HTTP -------------------------------------------------------------------------------------------------

def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_extension_api_lists_and_runs_ip_adapters(api_server):
    with httpx.Client(base_url=api_server[0], auth=("alice", "wonderland"), timeout=120) as client:
        models = client.get("/controlnet/model_list").json()["model_list"]
        model = next(m for m in models if m.startswith(f"{ADAPTER} ["))
        modules = client.get("/controlnet/module_list").json()
        assert "ip-adapter_clip_h" in modules["module_list"] and "ip-adapter_clip_g" not in modules["module_list"]
        assert modules["module_detail"]["ip-adapter_clip_h"]["sliders"] == []
        payload = {"prompt": "a red circle", "steps": 3, "width": 64, "height": 64, "seed": 5, "send_images": True,
                   "save_images": False}
        unit = {"enabled": True, "module": "ip-adapter_clip_sd15", "model": model, "weight": 0.8,
                "image": _b64(_picture())}
        made = client.post("/sdapi/v1/txt2img", json={**payload, "alwayson_scripts": {"controlnet": {"args": [unit]}}})
        assert made.status_code == 200, made.text
        assert 'Module: ip-adapter_clip_h, Model: ip-adapter_tiny-sd [' in made.json()["info"]
        assert "Weight: 0.8" in made.json()["info"]
        wrong = client.post("/sdapi/v1/txt2img", json={**payload, "alwayson_scripts": {"controlnet": {"args": [
            {**unit, "module": "canny"}]}}})
        assert wrong.status_code == 422 and "pick an ip-adapter_clip preprocessor" in wrong.json()["detail"]
