"""ControlNet: preprocessors, unit validation, units in the engine (one, two, modes, families) and over HTTP."""

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines.controlnet import ControlUnit
from pipelines.errors import RequestError
from pipelines.infotext import parse_infotext
from pipelines.preprocessors import INVERT, Preprocessors, available, unavailable_reason
from pipelines.request import GenerationRequest

SMALL = dict(prompt="a red circle", width=64, height=64, steps=4, seed=3)


def _circle(size=64, box=(16, 16, 48, 48)) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).ellipse(box, fill="red")
    return image


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def _unit(**values) -> dict:
    return {"model": "tiny-sd-control", "module": "canny", "image": _circle(), **values}


# -- preprocessors -------------------------------------------------------------------------------------------

def test_canny_finds_the_outline_of_a_drawn_circle(tmp_path):
    edges = np.asarray(Preprocessors(tmp_path).run("canny", _circle(), 64).convert("L")) > 127
    ys, xs = np.nonzero(edges)
    radius = np.hypot(xs - 31.5, ys - 31.5)
    assert edges.sum() > 60  # a closed outline, not a few specks
    assert np.all(np.abs(radius - 16) < 3)  # every edge pixel lies on the circle's outline
    assert not edges[28:36, 28:36].any() and not edges[:8].any()  # none inside, none in the background


def test_invert_and_none_and_the_cache(tmp_path):
    pre, scribble = Preprocessors(tmp_path), _circle()
    assert np.array_equal(np.asarray(pre.run(INVERT, scribble)), 255 - np.asarray(scribble))
    assert np.array_equal(np.asarray(pre.run("none", scribble)), np.asarray(scribble))
    assert pre.run("canny", scribble, 64) is pre.run("canny", scribble.copy(), 64)  # same bytes: cached
    assert pre.run("canny", scribble, 64, 10, 20) is not pre.run("canny", scribble, 64)


def test_preprocessors_without_weights_are_unavailable_and_say_where_to_put_them(tmp_path):
    assert {"none", "canny", "shuffle", INVERT} <= set(available(tmp_path))
    assert "softedge_hed" not in available(tmp_path)
    reason = unavailable_reason(tmp_path, "softedge_hed")
    assert "ControlNetHED.pth" in reason and str(tmp_path / "ControlNet" / "annotators") in reason
    with pytest.raises(RequestError, match="ControlNetHED.pth"):
        Preprocessors(tmp_path).run("softedge_hed", _circle())


# -- unit validation -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("values, message", [
    ({"weight": 2.5}, "Control weight must be between 0 and 2"),
    ({"guidance_start": 0.8, "guidance_end": 0.2}, "starting control step"),
    ({"module": "telepathy"}, "unknown preprocessor"),
    ({"model": ""}, "pick a ControlNet model"),
    ({"control_mode": "Louder"}, "Control mode must be one of"),
    ({"image": "not a picture"}, "must be an image"),
])
def test_bad_units_are_refused_with_a_message(values, message):
    with pytest.raises(RequestError, match=message) as caught:
        GenerationRequest(**SMALL, controlnets=[_unit(**values)])
    assert caught.value.field == "controlnets" and "ControlNet unit 0" in str(caught.value)


def test_units_accept_the_extensions_names_and_numbers():
    unit = ControlUnit.from_values({"model": "x [abc123]", "module": "canny", "resize_mode": "Resize and Fill",
                                    "control_mode": 2, "threshold_a": -1, "processor_res": -1}, 0)
    assert (unit.model, unit.resize_mode, unit.control_mode, unit.threshold_a, unit.processor_res) == ("x", 2, 2, None, 512)
    assert unit.thresholds() == (100, 200)


def test_a_txt2img_unit_without_a_picture_is_refused(engine):
    with pytest.raises(RequestError, match="upload a control image"):
        engine.generate(GenerationRequest(**SMALL, controlnets=[_unit(image=None)]), save=False)


# -- generation ----------------------------------------------------------------------------------------------

def test_a_control_changes_the_picture_and_leaves_no_residue(engine):
    plain = engine.generate(GenerationRequest(**SMALL), save=False)
    controlled = engine.generate(GenerationRequest(**SMALL, controlnets=[_unit()]), save=False)
    zero = engine.generate(GenerationRequest(**SMALL, controlnets=[_unit(weight=0)]), save=False)
    after = engine.generate(GenerationRequest(**SMALL), save=False)
    assert np.abs(_pixels(controlled.images[0]) - _pixels(plain.images[0])).mean() > 2
    assert np.abs(_pixels(zero.images[0]) - _pixels(plain.images[0])).max() <= 1  # weight 0: no control at all
    assert np.array_equal(_pixels(after.images[0]), _pixels(plain.images[0]))  # the base pipeline is untouched
    params = parse_infotext(controlled.infotexts[0])[2]
    assert params["ControlNet 0"].startswith("Module: canny, Model: tiny-sd-control [")
    assert "Weight: 1.0" in params["ControlNet 0"] and "Control Mode: Balanced" in params["ControlNet 0"]


def test_two_units_and_control_modes(engine):
    one = engine.generate(GenerationRequest(**SMALL, controlnets=[_unit()]), save=False).images[0]
    two = engine.generate(GenerationRequest(**SMALL, controlnets=[_unit(), _unit(module=INVERT, weight=0.7)]),
                          save=False)
    assert np.abs(_pixels(two.images[0]) - _pixels(one)).mean() > 1
    assert {"ControlNet 0", "ControlNet 1"} <= set(parse_infotext(two.infotexts[0])[2])
    modes = [engine.generate(GenerationRequest(**SMALL, controlnets=[_unit(control_mode=m)]), save=False).images[0]
             for m in (1, 2)]
    assert all(np.abs(_pixels(m) - _pixels(one)).mean() > 0.5 for m in modes)


def _half_mask(left: int, right: int, size=(64, 64)) -> Image.Image:
    mask = Image.new("L", size, right)
    mask.paste(left, (0, 0, size[0] // 2, size[1]))
    return mask


def test_an_effective_region_mask_keeps_a_control_to_its_region(engine):
    """The extension's effective region mask: black, the picture without the unit; white, the unit's own; white on
    the left only, the control's change there, in a hires pass too (the mask stretched to each size)."""
    def picture(*units, **values):
        return _pixels(engine.generate(GenerationRequest(**{**SMALL, **values}, controlnets=list(units)),
                                       save=False).images[0])

    plain, whole = picture(), picture(_unit())
    assert np.abs(picture(_unit(effective_region_mask=_half_mask(0, 0))) - plain).max() <= 1
    assert np.abs(picture(_unit(effective_region_mask=_half_mask(255, 255))) - whole).max() <= 1
    for values, side in (({}, 32), ({"enable_hr": True, "hr_scale": 1.5}, 48)):
        half = picture(_unit(effective_region_mask=_half_mask(255, 0)), **values)
        changed = np.abs(half - picture(**values)).mean(axis=(0, 2))  # by column
        # 1.75 and 1.6 times: the tiny UNet's attention carries some of the change across
        assert changed[:side].mean() > 1.4 * changed[side:].mean(), changed
    with pytest.raises(RequestError, match="effective region mask must be an image"):
        GenerationRequest(**SMALL, controlnets=[_unit(effective_region_mask="white")])
    with pytest.raises(RequestError, match="Tiled Diffusion's UNet calls see one tile at a time"):
        GenerationRequest(**SMALL, tiled_diffusion=True, controlnets=[_unit(effective_region_mask=_half_mask(0, 0))])


@pytest.mark.parametrize("mode", [0, 2])
def test_a_control_reaches_every_composable_part(engine, mode):
    """Its residuals go with each part's share of the batch: two halves of the prompt give the prompt's picture,
    in the balanced mode and with the ControlNet more important (its residuals on the prompted half only)."""
    units = [_unit(control_mode=mode)]
    whole = engine.generate(GenerationRequest(**SMALL, controlnets=units), save=False).images[0]
    halves = {**SMALL, "prompt": f"{SMALL['prompt']}:0.5 AND {SMALL['prompt']}:0.5"}
    composed = engine.generate(GenerationRequest(**halves, controlnets=units), save=False).images[0]
    assert np.abs(_pixels(composed) - _pixels(whole)).max() <= 1


def test_img2img_inpaint_and_hires_with_a_control(engine):
    init = _circle()
    result = engine.generate(GenerationRequest(**SMALL, task="img2img", init_image=init,
                                               controlnets=[_unit(image=None)]), save=False)
    assert result.images[0].size == (64, 64)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    inpainted = engine.generate(GenerationRequest(**SMALL, task="inpaint", init_image=init, mask=mask,
                                                  controlnets=[_unit()]), save=False)
    assert "ControlNet 0" in inpainted.infotexts[0]
    assert np.array_equal(_pixels(inpainted.images[0])[:, 48:], _pixels(init)[:, 48:])  # outside mask and blur: kept
    hires = engine.generate(GenerationRequest(**SMALL, enable_hr=True, hr_scale=1.5, controlnets=[_unit()]),
                            save=False)
    assert hires.images[0].size == (96, 96)


def test_a_controlnet_of_another_family_is_refused(engine):
    with pytest.raises(RequestError, match="cannot control 'tiny-sdxl'"):
        engine.generate(GenerationRequest(**{**SMALL, "model": "tiny-sdxl"}, controlnets=[_unit()]), save=False)
    sdxl = engine.generate(GenerationRequest(**{**SMALL, "model": "tiny-sdxl"},
                                             controlnets=[_unit(model="tiny-sdxl-control")]), save=False)
    assert sdxl.images[0].size == (64, 64)


def test_unknown_controlnet_model_names_the_folder(engine):
    with pytest.raises(RequestError, match="Unknown ControlNet model 'nope'.*tiny-sd-control"):
        engine.generate(GenerationRequest(**SMALL, controlnets=[_unit(model="nope")]), save=False)


# -- REST API ------------------------------------------------------------------------------------------------

def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def client(api_server):
    with httpx.Client(base_url=api_server[0], auth=("alice", "wonderland"), timeout=120) as http:
        yield http


def test_api_units_and_the_extension_routes(client):
    models = client.get("/controlnet/model_list").json()["model_list"]
    assert any(m.startswith("tiny-sd-control [") for m in models)
    modules = client.get("/controlnet/module_list").json()
    assert "canny" in modules["module_list"] and "softedge_hed" not in modules["module_list"]
    assert modules["module_detail"]["canny"]["sliders"][1]["name"] == "Canny Low Threshold"
    detected = client.post("/controlnet/detect", json={"controlnet_module": "canny", "controlnet_processor_res": 64,
                                                        "controlnet_input_images": [_b64(_circle())]}).json()
    edges = np.asarray(Image.open(io.BytesIO(base64.b64decode(detected["images"][0]))).convert("L")) > 127
    assert edges.sum() > 60
    model = next(m for m in models if m.startswith("tiny-sd-control ["))
    unit = {"enabled": True, "module": "canny", "model": model, "weight": 1.0, "image": _b64(_circle()),
            "resize_mode": 1, "processor_res": 64, "threshold_a": 100, "threshold_b": 200, "guidance_start": 0.0,
            "guidance_end": 1.0, "control_mode": 0, "pixel_perfect": False}
    payload = {**SMALL, "send_images": True, "save_images": False}
    plain = client.post("/sdapi/v1/txt2img", json=payload).json()
    controlled = client.post("/sdapi/v1/txt2img", json={**payload, "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert controlled.status_code == 200, controlled.text
    info = controlled.json()["info"]
    assert "ControlNet 0" in info and controlled.json()["images"][0] != plain["images"][0]
    nowhere = client.post("/sdapi/v1/txt2img", json={**payload, "alwayson_scripts": {"controlnet": {"args": [
        {**unit, "effective_region_mask": _b64(_half_mask(0, 0))}]}}})  # the extension's field: black, no control
    assert nowhere.status_code == 200, nowhere.text
    with Image.open(io.BytesIO(base64.b64decode(nowhere.json()["images"][0]))) as masked, \
            Image.open(io.BytesIO(base64.b64decode(plain["images"][0]))) as own:
        assert np.abs(_pixels(masked) - _pixels(own)).max() <= 1
    unreadable = client.post("/sdapi/v1/txt2img", json={**payload, "alwayson_scripts": {"controlnet": {"args": [
        {**unit, "effective_region_mask": "bm90IGFuIGltYWdl"}]}}})
    assert unreadable.status_code == 422, unreadable.text
    assert unreadable.json()["field"] == "alwayson_scripts.controlnet.args[0].effective_region_mask"
    bad = client.post("/sdapi/v1/txt2img", json={**payload, "alwayson_scripts": {"controlnet": {"args": [
        {**unit, "guidance_start": 0.9, "guidance_end": 0.1}]}}})
    assert bad.status_code == 422 and bad.json()["field"] == "alwayson_scripts.controlnet.args"


# -- single-file ControlNets -----------------------------------------------------------------------------------

def test_a_single_file_controlnet_loads_and_equals_its_folder(models_dir, tmp_path):
    """A diffusers state dict in one .safetensors file, its family named by a sidecar (the tiny model is no real
    family), gives exactly the pictures of the same ControlNet as a folder."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter
    from pipelines.registry import Registry

    root = tmp_path / "models"
    shutil.copytree(models_dir / "Stable-diffusion" / "tiny-sd", root / "Stable-diffusion" / "tiny-sd")
    shutil.copytree(models_dir / "ControlNet" / "tiny-sd-control", root / "ControlNet" / "tiny-sd-control")
    (root / "configs" / "tiny" / "unet").mkdir(parents=True)
    (root / "configs" / "tiny" / "model_index.json").write_text("{}")
    shutil.copy(models_dir / "Stable-diffusion" / "tiny-sd" / "unet" / "config.json", root / "configs" / "tiny" / "unet")
    weights = load_file(models_dir / "ControlNet" / "tiny-sd-control" / "diffusion_pytorch_model.safetensors")
    save_file(weights, root / "ControlNet" / "tiny-file.safetensors")
    (root / "ControlNet" / "tiny-file.easel.json").write_text(json.dumps({"family": "tiny"}))

    engine = Engine(Registry(root, default_model="tiny-sd"), OutputWriter(tmp_path / "out", enabled=False))
    assert engine.registry.controlnet_names() == ["tiny-file", "tiny-sd-control"]
    folder, single = (engine.generate(GenerationRequest(**SMALL, controlnets=[_unit(model=name)]), save=False)
                      for name in ("tiny-sd-control", "tiny-file"))
    assert np.array_equal(_pixels(folder.images[0]), _pixels(single.images[0]))
    assert "Model: tiny-file [" in single.infotexts[0]


@pytest.mark.parametrize("width, family", [(768, "sd15"), (1024, "sd2"), (2048, "sdxl")])
def test_single_file_controlnet_families_from_cross_attention_width(tmp_path, width, family):
    import torch
    from safetensors.torch import save_file

    from pipelines.checkpoints import controlnet_family

    path = tmp_path / "control.safetensors"
    save_file({"control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(8, width,
                                                                                                      dtype=torch.int8)},
              path)
    assert controlnet_family(path) == family


def test_a_single_file_of_no_known_family_says_how_to_name_it(tmp_path):
    import torch
    from safetensors.torch import save_file

    from pipelines.checkpoints import controlnet_family
    from pipelines.errors import ModelError

    path = tmp_path / "odd.safetensors"
    save_file({"down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": torch.zeros(8, 8)}, path)
    with pytest.raises(ModelError, match='odd.easel.json with {"family": "sd15"}'):
        controlnet_family(path)
