"""The app as a user or script meets it: gradio_client calls on the launched app, and the launch flags."""

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app

# The Gradio client needs every image input named, the ControlNet units' pictures too.
NO_CONTROL = {f"cn{i}_image": None for i in range(3)}


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def test_every_public_event_is_named(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/txt2img", "/txt2img_interrupt", "/txt2img_skip", "/png_info", "/send_to_txt2img", "/refresh_models",
            "/model_defaults", "/set_vae"} <= set(endpoints)
    names = [p["parameter_name"] for p in endpoints["/txt2img"]["parameters"]]
    assert names[:2] == ["prompt", "negative_prompt"] and names[-1] == "model_name"
    assert {"sampler", "seed", "enable_hr", "hr_upscaler"} <= set(names)


def test_txt2img_returns_images_with_infotext_after_their_grid(client):
    gallery, _, info, *_ = client.predict(**NO_CONTROL, prompt="a red circle", negative_prompt="blue", steps=3,
                                          width=64, height=64, batch_size=2, seed=11, model_name="tiny-sd",
                                          api_name="/txt2img")
    assert [item["caption"] for item in gallery] == ["Grid", "Seed 11", "Seed 12"]  # A1111's grid first
    assert info.startswith("a red circle\nNegative prompt: blue\nSteps: 3, Sampler: Euler a, CFG scale: 7, Seed: 11,")
    with Image.open(gallery[2]["image"]) as image, Image.open(gallery[0]["image"]) as grid:
        assert image.size == (64, 64) and "Seed: 12," in image.info["parameters"]
        assert grid.size == (128, 64) and grid.crop((64, 0, 128, 64)).tobytes() == image.convert("RGB").tobytes()


@pytest.mark.parametrize("values, message", [
    ({"width": 65}, "Width must be a multiple of 8, got 65."),
    ({"steps": 0}, "Value 0 is less than minimum value 1."),  # the widget bounds answer first
    ({"seed": 2**32}, "Seed must be between -1 and 4294967295"),
    ({"sampler": "Nope"}, "Unknown sampler 'Nope'"),
    ({"model_name": "missing"}, "Unknown model 'missing'"),
    ({"prompt_lines": "a cat\n--steps lots"}, "Line 2 of the prompt list: --steps takes a number, got 'lots'."),
    ({"prompt_lines": "a cat\n--steps 0"}, "Steps must be between 1 and 150, got 0."),  # before any job
])
def test_bad_input_returns_the_message(client, values, message):
    arguments = {"prompt": "x", "steps": 2, "width": 64, "height": 64, "model_name": "tiny-sd", **values}
    with pytest.raises(AppError, match=message.replace("(", r"\(")):
        client.predict(**NO_CONTROL, **arguments, api_name="/txt2img")
    assert client.predict(**NO_CONTROL, prompt="x", steps=1, width=64, height=64, api_name="/txt2img")[0]  # still serving


def test_png_info_reads_parameters_and_sends_them_to_txt2img(client, tmp_path):
    gallery, *_ = client.predict(**NO_CONTROL, prompt="a star", steps=2, width=64, height=64, seed=5, clip_skip=2,
                                 refiner_checkpoint="tiny-sd", refiner_switch_at=0.5, seed_resize_from_w=32,
                                 seed_resize_from_h=32, model_name="tiny-sd", api_name="/txt2img")
    text = client.predict(handle_file(gallery[0]["image"]), api_name="/png_info")
    assert text.startswith("a star\nSteps: 2") and "Clip skip: 2" in text and "Refiner: tiny-sd [" in text
    from ui.transfer import SENT_FIELDS

    from pipelines.soft_inpainting import SETTINGS as SOFT_SETTINGS
    from pipelines.tiled_diffusion import UPSCALE_FIELDS

    img2img_only = ("initial_noise_multiplier", "color_correction",  # img2img's and inpaint's alone
                    "soft_inpainting", *(setting.field for setting in SOFT_SETTINGS), *UPSCALE_FIELDS)
    names = [name for name in SENT_FIELDS if name not in img2img_only]

    def send(infotext: str) -> dict:
        return dict(zip([*names, "model"], client.predict(infotext, api_name="/send_to_txt2img")))

    sent = send(text)
    assert (sent["prompt"], sent["steps"], sent["seed"], sent["clip_skip"]) == ("a star", 2, 5, 2)
    assert sent["model"] == "tiny-sd" and sent["enable_hr"] is False and sent["hr_sampler_name"] == "Use same"
    assert (sent["refiner_checkpoint"], sent["refiner_switch_at"]) == ("tiny-sd", 0.5)  # the title's name
    assert (sent["seed_resize_from_w"], sent["seed_resize_from_h"]) == (32, 32)
    assert sent["hr_checkpoint_name"] == "Use same checkpoint"
    sent = send("a star\nSteps: 2, Hires upscale: 2, Hires checkpoint: tiny-sdxl [0123456789]")
    assert (sent["hr_checkpoint_name"], sent["refiner_checkpoint"]) == ("tiny-sdxl", "None")
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert client.predict(handle_file(str(plain)), api_name="/png_info") == "This image has no generation parameters."
    with pytest.raises(AppError, match="No generation parameters to read"):  # not sent as a prompt
        send("This image has no generation parameters.")


def test_model_defaults_follow_the_model(client):
    assert client.predict("tiny-sdxl", api_name="/model_defaults")[:3] == (64, 64, 20)
    model, vae = client.predict("tiny-sd", api_name="/refresh_models")
    assert model["value"] == "tiny-sd" and vae["value"] == "Automatic"


@pytest.mark.parametrize("argv, refused", [
    ([], False),
    (["--host", "localhost"], False),
    (["--host", "0.0.0.0"], True),
    (["--share"], True),
    (["--host", "0.0.0.0", "--auth", "u:p"], False),
    (["--share", "--insecure"], False),
])
def test_exposure_without_auth_is_refused(argv, refused):
    problem = app.exposure_problem(app.parse_args(argv), on_space=False)
    assert bool(problem) == refused
    if refused:
        assert "--auth" in problem


def test_a_space_controls_its_own_access():
    assert app.exposure_problem(app.parse_args(["--host", "0.0.0.0"]), on_space=True) is None


def test_main_refuses_to_start_and_says_why(capsys):
    with pytest.raises(SystemExit) as stop:
        app.main(["--share"])
    assert stop.value.code == 2 and "Refusing to start: --share" in capsys.readouterr().err


def test_auth_from_a_value_or_a_file(tmp_path):
    assert app.parse_auth("alice:secret") == [("alice", "secret")]
    users = tmp_path / "users.txt"
    users.write_text("alice:one\n\nbob:two:with-colon\n")
    assert app.parse_auth(str(users)) == [("alice", "one"), ("bob", "two:with-colon")]
    with pytest.raises(SystemExit, match="expected user:password"):
        app.parse_auth("nopassword")


def test_importing_app_starts_nothing():
    import subprocess
    import sys

    code = "import sys, app; print('gradio' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_compiled_kernels_are_kept_where_a_reboot_keeps_them(monkeypatch, tmp_path):
    """torch.compile's inductor writes its kernels under .cache (not its /tmp default), so a later launch reads them
    back; a cache directory the user names is kept."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    app.keep_compiled_kernels()
    assert cache_dir() == str(app.ROOT / ".cache" / "torchinductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    app.keep_compiled_kernels()
    assert cache_dir() == str(tmp_path)


def _gradient_png(tmp_path, size=(96, 64)):
    import numpy as np

    x = np.linspace(0, 255, size[0], dtype=np.uint8)
    path = tmp_path / "init.png"
    Image.fromarray(np.stack([np.tile(x, (size[1], 1))] * 3, axis=-1)).save(path)
    return path


def test_img2img_through_the_gradio_api(client, tmp_path):
    gallery, _, info, *_ = client.predict(**NO_CONTROL, prompt="a red circle", init_image=handle_file(str(_gradient_png(tmp_path))),
                                          batch_files=None, resize_mode="Crop and resize", denoising_strength=0.5, steps=4, width=64,
                                          height=64, seed=2, model_name="tiny-sd", api_name="/img2img")
    assert "Denoising strength: 0.5" in info and "Seed: 2," in info
    with Image.open(gallery[0]["image"]) as image:
        assert image.size == (64, 64)


def test_img2img_resize_by_scales_the_pictures_own_size(client, tmp_path):
    """A1111's "Resize by": a 80x64 picture at 1.5 makes 120x96 (the width and height boxes are passed over)."""
    gallery, _, info, *_ = client.predict(**NO_CONTROL, prompt="x", init_image=handle_file(str(_gradient_png(
        tmp_path, (80, 64)))), size_from="Resize by", scale_by=1.5, steps=2, width=64, height=64,
        api_name="/img2img")
    assert "Size: 120x96," in info
    with Image.open(gallery[0]["image"]) as image:
        assert image.size == (120, 96)


def test_inpaint_through_the_gradio_api(client, tmp_path):
    import numpy as np

    init = _gradient_png(tmp_path, (64, 64))
    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (16, 16, 48, 48))
    layer.save(tmp_path / "layer.png")
    editor = {"background": handle_file(str(init)), "layers": [handle_file(str(tmp_path / "layer.png"))],
              "composite": handle_file(str(init))}
    gallery, _, info, *_ = client.predict(**NO_CONTROL, prompt="a blue square", editor=editor, mask_upload=None, mask_blur=0,
                                          denoising_strength=1.0,
                                          steps=3, width=64, height=64, seed=4, model_name="tiny-sd",
                                          api_name="/inpaint")
    assert "Mask blur: 0, Masked content: original" in info
    out, original = np.asarray(Image.open(gallery[0]["image"]).convert("RGB")), np.asarray(Image.open(init))
    assert np.array_equal(out[:16], original[:16]) and not np.array_equal(out[20:44, 20:44], original[20:44, 20:44])
    empty = {"background": handle_file(str(init)), "layers": [], "composite": handle_file(str(init))}
    with pytest.raises(AppError, match="The mask is empty"):
        client.predict(**NO_CONTROL, prompt="x", editor=empty, mask_upload=None, steps=2, width=64, height=64, api_name="/inpaint")


def test_outpaint_through_the_gradio_api(client, tmp_path):
    init = _gradient_png(tmp_path, (64, 64))
    editor = {"background": handle_file(str(init)), "layers": [], "composite": handle_file(str(init))}
    gallery, _, info, *_ = client.predict(**NO_CONTROL, prompt="more", editor=editor, mask_upload=None, outpaint_right=32,
                                          outpaint_down=8, steps=3, width=64, height=64, denoising_strength=1.0,
                                          model_name="tiny-sd", api_name="/inpaint")
    assert "Size: 96x72" in info and "Outpaint: L0 R32 U0 D8" in info
    with Image.open(gallery[0]["image"]) as image:
        assert image.size == (96, 72)


def test_hires_fix_through_the_gradio_api(client):
    gallery, _, info, *_ = client.predict(**NO_CONTROL, prompt="a circle", enable_hr=True, hr_scale=1.5, hr_upscaler="Lanczos",
                                          hr_sampler_name="Use same", steps=2, width=64, height=64,
                                          denoising_strength=0.5, model_name="tiny-sd", api_name="/txt2img")
    assert "Hires upscale: 1.5, Hires upscaler: Lanczos" in info and "Hires sampler" not in info
    with Image.open(gallery[0]["image"]) as image:
        assert image.size == (96, 96)


def test_img2img_batch_over_a_folder(client, tmp_path):
    first = _gradient_png(tmp_path, (64, 64))
    second = tmp_path / "flat.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(second)
    (tmp_path / "notes.txt").write_text("not a picture")
    files = [handle_file(str(p)) for p in (first, second, tmp_path / "notes.txt")]
    gallery, _, info, *_ = client.predict(**NO_CONTROL, prompt="x", init_image=None, batch_files=files, denoising_strength=0.5,
                                          steps=2, width=64, height=64, seed=8, model_name="tiny-sd",
                                          api_name="/img2img")
    assert [item["caption"] for item in gallery] == ["Seed 8", "Seed 8"]  # one picture per init image
    with Image.open(gallery[0]["image"]) as a, Image.open(gallery[1]["image"]) as b:
        assert a.tobytes() != b.tobytes()
    with pytest.raises(AppError, match="The folder holds no images"):
        client.predict(**NO_CONTROL, prompt="x", init_image=None, batch_files=[files[2]], steps=2, width=64, height=64,
                       api_name="/img2img")


def test_models_tab_loads_lists_and_unloads(client):
    rows, budget = client.predict("tiny-sdxl", api_name="/models_load")
    resident = {row[0]: row for row in rows["data"]}
    assert resident["tiny-sdxl"][1:3] == ["cpu", "normal"] and resident["tiny-sdxl"][3] > 0
    assert resident["tiny-sdxl"][4] == "no"
    assert budget.startswith("Memory budget:")
    rows, _ = client.predict("tiny-sdxl", api_name="/models_unload")
    assert "tiny-sdxl" not in {row[0] for row in rows["data"]}
    with pytest.raises(AppError, match="Unknown model 'nope'"):
        client.predict("nope", api_name="/models_load")


def test_a_controlnet_unit_through_the_gradio_api(client, tmp_path):
    picture = tmp_path / "circle.png"
    Image.new("RGB", (64, 64), "white").save(picture)
    _, _, info, *_ = client.predict(**{**NO_CONTROL, "cn0_image": handle_file(str(picture))}, cn0_enabled=True,
                                    cn0_model="tiny-sd-control", cn0_module="invert (from white bg & black line)",
                                    cn0_weight=0.5, prompt="x", steps=2, width=64, height=64, seed=1,
                                    model_name="tiny-sd", api_name="/txt2img")
    assert 'ControlNet 0: "Module: invert (from white bg & black line), Model: tiny-sd-control [' in info
    assert "Weight: 0.5" in info
    edges = client.predict(handle_file(str(picture)), "canny", 64, 100, 200, False, "Crop and Resize", 64, 64,
                           api_name="/txt2img_controlnet0_preview")
    assert Image.open(edges).size == (64, 64)
