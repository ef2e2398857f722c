"""The A1111-compatible REST API driven with plain HTTP, the way A1111 clients and scripts do.

The server is the real app launched from its flags (``api_server`` in conftest): API users alice and bob
(HTTP Basic), and a separate UI login, on the tiny random models at 64x64.
"""

import base64
import io
import json
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

import app
from pipelines.infotext import parse_infotext
from pipelines.prompt_matrix import PromptMatrix
from pipelines.request import GenerationRequest

ALICE, BOB = ("alice", "wonderland"), ("bob", "builder")
SMALL = {"steps": 3, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def url(api_server):
    return api_server[0]


@pytest.fixture(scope="module")
def alice(url):
    with httpx.Client(base_url=url, auth=ALICE, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def bob(url):
    with httpx.Client(base_url=url, auth=BOB, timeout=120) as client:
        yield client


def b64_png(image: Image.Image, data_url: bool = False) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    text = base64.b64encode(buffer.getvalue()).decode()
    return f"data:image/png;base64,{text}" if data_url else text


def decode(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(fetch, condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fetch()
        if condition(value):
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s; last value {value!r}")


# -- generation -----------------------------------------------------------------------------------------------
def test_txt2img_returns_pngs_whose_infotext_matches_the_request(alice):
    payload = {"prompt": "a red circle", "negative_prompt": "blue", "sampler_name": "DPM++ 2M",
               "scheduler": "karras", "cfg_scale": 5.5, "seed": 11, "batch_size": 2, **SMALL}
    body = ok(alice.post("/sdapi/v1/txt2img", json=payload))
    info = json.loads(body["info"])
    assert info["all_seeds"] == [11, 12] and info["seed"] == 11 and info["sd_model_name"] == "tiny-sd"
    assert len(body["images"]) == len(info["infotexts"]) == 2
    assert body["parameters"]["prompt"] == "a red circle" and body["parameters"]["n_iter"] == 1  # the echo
    for encoded, infotext, seed in zip(body["images"], info["infotexts"], (11, 12)):
        image = decode(encoded)
        assert image.format == "PNG" and image.size == (64, 64)
        assert image.info["parameters"] == infotext
        sent = GenerationRequest.from_infotext(infotext)
        assert (sent.prompt, sent.negative_prompt, sent.sampler, sent.scheduler, sent.steps, sent.cfg_scale,
                sent.width, sent.height, sent.seed, sent.model) == (
            "a red circle", "blue", "DPM++ 2M", "Karras", 3, 5.5, 64, 64, seed, "tiny-sd")
        assert parse_infotext(infotext)[2]["Model hash"] == info["sd_model_hash"]


def test_a1111_defaults_and_the_same_seed_gives_identical_images(alice):
    first = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a star", "seed": 7, **SMALL}))
    second = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a star", "seed": 7, **SMALL}))
    assert decode(first["images"][0]).tobytes() == decode(second["images"][0]).tobytes()
    info = json.loads(first["info"])
    assert info["sampler_name"] == "Euler" and info["cfg_scale"] == 7.0  # A1111's API defaults
    random_seed = json.loads(ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a star", **SMALL}))["info"])
    assert random_seed["seed"] >= 0 and random_seed["all_seeds"] == [random_seed["seed"]]


def test_composable_parts_through_the_api(alice):
    """A1111's ``AND`` in an API prompt: two halves of a prompt give the prompt's picture; the info keeps it."""
    whole = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a star", "seed": 7, **SMALL}))
    halves = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a star:0.5 AND a star:0.5", "seed": 7, **SMALL}))
    difference = np.abs(np.asarray(decode(halves["images"][0]), dtype=int) - np.asarray(decode(whole["images"][0])))
    assert difference.max() <= 1 and json.loads(halves["info"])["prompt"] == "a star:0.5 AND a star:0.5"
    other = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a star AND a moon", "seed": 7, **SMALL}))
    assert decode(other["images"][0]).tobytes() != decode(whole["images"][0]).tobytes()


def test_n_iter_and_send_images(alice):
    unused_controlnet = {"controlnet": {"args": [{"enabled": False, "module": "canny"}]}}  # accepted: it is off
    body = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 3, "n_iter": 2, "batch_size": 1,
                                                      "send_images": False, "alwayson_scripts": unused_controlnet,
                                                      **SMALL}))
    info = json.loads(body["info"])
    assert body["images"] == [] and info["all_seeds"] == [3, 4] and len(info["infotexts"]) == 2
    assert info["all_subseeds"] == [-1, -1] and info["subseed_strength"] == 0  # no variation seed


def test_variation_seeds(alice):
    body = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 3, "subseed": 9, "subseed_strength": 0.25,
                                                      "batch_size": 2, **SMALL}))
    info = json.loads(body["info"])
    assert (info["subseed"], info["all_subseeds"], info["subseed_strength"]) == (9, [9, 10], 0.25)
    assert "Variation seed: 10, Variation seed strength: 0.25" in info["infotexts"][1]


def test_img2img_takes_variation_seeds_noise_multiplier_and_colour_correction_from_payload_options_or_override(alice):
    def infotext(**payload):
        body = ok(alice.post("/sdapi/v1/img2img", json={"prompt": "x", "init_images": [PNG], "seed": 3, **SMALL,
                                                          **payload}))
        return json.loads(body["info"])["infotexts"][0]

    assert "Variation seed: 9, Variation seed strength: 0.25, " in infotext(subseed=9, subseed_strength=0.25)
    assert "Noise multiplier: 0.5," in infotext(initial_noise_multiplier=0.5)
    assert "Noise multiplier: 0.7," in infotext(override_settings={"initial_noise_multiplier": 0.7})
    try:
        ok(alice.post("/sdapi/v1/options", json={"initial_noise_multiplier": 0.9}))
        assert ok(alice.get("/sdapi/v1/options"))["initial_noise_multiplier"] == 0.9
        assert "Noise multiplier: 0.9," in infotext()
        assert "Noise multiplier: 0.5," in infotext(initial_noise_multiplier=0.5)  # the payload's own first
    finally:
        ok(alice.post("/sdapi/v1/options", json={"initial_noise_multiplier": 1.0}))
    assert "Noise multiplier" not in infotext()
    response = alice.post("/sdapi/v1/options", json={"initial_noise_multiplier": 3})
    assert response.status_code == 422 and response.json()["field"] == "initial_noise_multiplier"
    assert "Color correction: True," in infotext(override_settings={"img2img_color_correction": True})
    try:
        ok(alice.post("/sdapi/v1/options", json={"img2img_color_correction": True}))
        assert ok(alice.get("/sdapi/v1/options"))["img2img_color_correction"] is True
        assert "Color correction: True," in infotext()
    finally:
        ok(alice.post("/sdapi/v1/options", json={"img2img_color_correction": False}))
    assert "Color correction" not in infotext()
    assert "Extra noise: 0.3," in infotext(override_settings={"img2img_extra_noise": 0.3})
    assert "Extra noise: 0.2," in infotext(infotext="x\nSteps: 3, Seed: 3, Denoising strength: 0.75, Extra noise: 0.2")
    try:
        ok(alice.post("/sdapi/v1/options", json={"img2img_extra_noise": 0.1}))
        assert "Extra noise: 0.1," in infotext()
        hires = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 3, **SMALL, "enable_hr": True,
                                                         "hr_scale": 1.5}))
        assert "Extra noise: 0.1," in json.loads(hires["info"])["infotexts"][0]  # hires fix's second pass
    finally:
        ok(alice.post("/sdapi/v1/options", json={"img2img_extra_noise": 0}))
    assert "Extra noise" not in infotext()


def test_negative_guidance_minimum_sigma_from_payload_options_or_override(alice):
    """A1111's ``s_min_uncond``: the payload's, else ``override_settings``', else the option; ``NGMS`` in the
    infotext once a call left the unprompted half out (SMALL's 3 steps: the second call is under sigma 15)."""
    def infotext(**payload):
        body = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 3, **SMALL, **payload}))
        return json.loads(body["info"])["infotexts"][0]

    assert "NGMS: 15," in infotext(s_min_uncond=15)
    assert "NGMS: 14," in infotext(override_settings={"s_min_uncond": 14})
    try:
        ok(alice.post("/sdapi/v1/options", json={"s_min_uncond": 13}))
        assert "NGMS: 13," in infotext() and "NGMS: 12," in infotext(s_min_uncond=12)
        assert "NGMS: 11," in infotext(infotext="x\nSteps: 3, Seed: 3, NGMS: 11")  # read from an infotext
    finally:
        ok(alice.post("/sdapi/v1/options", json={"s_min_uncond": 0}))
    assert "NGMS" not in infotext()
    response = alice.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, "s_min_uncond": 16})
    assert response.status_code == 422 and response.json()["field"] == "s_min_uncond"


def test_ngms_all_steps_and_skip_early_cfg_from_options_or_override(alice):
    """A1111's options ``s_min_uncond_all`` and ``skip_early_cond`` (no payload fields): ``override_settings``', else
    the option's; in the infotext once they left the unprompted half out, and read from an ``infotext``."""
    def infotext(**payload):
        body = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 3, **SMALL, **payload}))
        return json.loads(body["info"])["infotexts"][0]

    assert "NGMS: 15, NGMS all steps: True," in infotext(s_min_uncond=15, override_settings={"s_min_uncond_all": True})
    assert "Skip Early CFG: 0.5," in infotext(override_settings={"skip_early_cond": 0.5})
    try:
        ok(alice.post("/sdapi/v1/options", json={"skip_early_cond": 0.4, "s_min_uncond_all": True}))
        assert "Skip Early CFG: 0.4," in infotext() and "Skip Early CFG" not in infotext(
            override_settings={"skip_early_cond": 0})
        assert "NGMS all steps: True," in infotext(s_min_uncond=1)
    finally:
        ok(alice.post("/sdapi/v1/options", json={"skip_early_cond": 0, "s_min_uncond_all": False}))
    assert "Skip Early CFG: 0.3, NGMS: 15, NGMS all steps: True," in infotext(
        infotext="x\nSteps: 3, Seed: 3, Skip Early CFG: 0.3, NGMS: 15, NGMS all steps: True")
    response = alice.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL,
                                                     "override_settings": {"skip_early_cond": 2}})
    assert response.status_code == 422 and response.json()["field"] == "override_settings.skip_early_cond"


def test_sampler_parameters_from_payload_options_or_override(alice):
    """A1111's ``eta`` (whichever eta the sampler reads) and sigma churn fields, else ``override_settings``', else its
    Sampler parameters options; in the infotext where the sampler reads them, and read back from one."""
    def params(**payload):
        body = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 3, **SMALL, **payload}))
        return parse_infotext(json.loads(body["info"])["infotexts"][0])[2]

    assert params(sampler_name="Euler a", eta=0.5)["Eta"] == "0.5"
    assert params(sampler_name="DDIM", eta=0.5)["Eta DDIM"] == "0.5"
    assert "Eta" not in params(sampler_name="Euler", eta=0.5)  # Euler reads no eta
    assert params(sampler_name="Euler", s_churn=2, s_noise=0.9)["Sigma noise"] == "0.9"
    karras = params(sampler_name="DPM++ 2M", scheduler="karras", override_settings={"sigma_max": 9.5, "rho": 5})
    assert (karras["Schedule max sigma"], karras["Schedule rho"]) == ("9.5", "5")
    try:
        ok(alice.post("/sdapi/v1/options", json={"eta_ancestral": 0.25, "eta_ddim": 0.75}))
        assert params(sampler_name="Euler a")["Eta"] == "0.25" and params(sampler_name="DDIM")["Eta DDIM"] == "0.75"
        assert "Eta" not in params(sampler_name="Euler a", eta=1)  # the payload's wins: A1111's default
        assert params(sampler_name="Euler a", override_settings={"eta_ancestral": 0.5})["Eta"] == "0.5"
    finally:
        ok(alice.post("/sdapi/v1/options", json={"eta_ancestral": 1, "eta_ddim": 0}))
    assert params(infotext="x\nSteps: 3, Sampler: DDIM, Seed: 3, Eta DDIM: 0.7")["Eta DDIM"] == "0.7"
    zero_snr = params(sampler_name="Euler", override_settings={"sd_noise_schedule": "Zero Terminal SNR"})
    assert zero_snr["Noise Schedule"] == "Zero Terminal SNR"
    assert params(sampler_name="UniPC", override_settings={"uni_pc_order": 2})["UniPC order"] == "2"
    unipc = params(infotext="x\nSteps: 3, Sampler: UniPC, Seed: 3, UniPC order: 1, UniPC lower order final: False")
    assert (unipc["UniPC order"], unipc["UniPC lower order final"]) == ("1", "False")
    assert params(sampler_name="Euler a", override_settings={"eta_noise_seed_delta": 31337})["ENSD"] == "31337"
    assert "ENSD" not in params(sampler_name="Euler", override_settings={"eta_noise_seed_delta": 31337})  # no noise
    assert params(infotext="x\nSteps: 3, Sampler: DPM2 a, Seed: 3, ENSD: 31337")["ENSD"] == "31337"
    try:
        ok(alice.post("/sdapi/v1/options", json={"eta_noise_seed_delta": 5}))
        assert params(sampler_name="DDPM")["ENSD"] == "5"
    finally:
        ok(alice.post("/sdapi/v1/options", json={"eta_noise_seed_delta": 0}))


def test_prompts_from_file_or_textbox_runs_a_job_per_line(alice):
    """A1111's script through ``script_name``/``script_args``: every line's pictures in one response, seeds
    iterated per line by the images a line makes."""
    body = ok(alice.post("/sdapi/v1/txt2img", json={
        "prompt": "on white", "seed": 3, "batch_size": 2, **SMALL, "script_name": "Prompts from file or textbox",
        "script_args": [True, False, "start", 'a cat\n--prompt "a dog" --steps 1 --negative_prompt dark']}))
    info = json.loads(body["info"])
    assert len(body["images"]) == 4 and info["all_seeds"] == [3, 4, 5, 6]
    assert info["all_prompts"] == ["a cat on white"] * 2 + ["a dog on white"] * 2
    assert info["all_negative_prompts"][2:] == ["dark"] * 2 and "Steps: 1," in info["infotexts"][3]
    old = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "", "seed": 3, **SMALL, "script_name": "prompts from "
                                                   "file or textbox", "script_args": [False, True, "x\ny"]}))
    assert json.loads(old["info"])["all_prompts"] == ["x", "y"]  # A1111 before 1.6: three arguments


def test_prompt_matrix_answers_its_grid_first(alice, api_server):
    outputs = api_server[1]
    body = ok(alice.post("/sdapi/v1/txt2img", json={
        "prompt": "a house|at night|old", "seed": 3, **SMALL, "save_images": True, "script_name": "Prompt matrix",
        "script_args": [False, True, "positive", "space", 24]}))
    info = json.loads(body["info"])
    assert len(body["images"]) == 5 and info["index_of_first_image"] == 1 and info["all_seeds"] == [3, 4, 5, 6]
    assert info["all_prompts"] == ["a house", "a house at night", "a house old", "a house at night old"]
    grid = decode(body["images"][0])
    pictures = [decode(image) for image in body["images"][1:]]
    assert grid.size == PromptMatrix(margin=24).grid({"prompt": "a house|at night|old"}, pictures).size  # margins
    assert grid.width >= 2 * 64 + 24 and grid.height > 2 * 64 + 24 and info["infotexts"][0] == info["infotexts"][1]
    assert grid.info["parameters"] == info["infotexts"][0]  # A1111's: a grid answered carries its parameters
    assert any(path.parent.parent.name == "txt2img-grids" for path in outputs.rglob("*.png"))


XYZ_NOTHING = [0, "", None, 0, "", None]  # A1111's Y and Z axes unused


def test_xyz_plot_answers_its_grid_then_the_cells_as_a1111s_script(alice, api_server):
    """Axis types by index into A1111 1.10's list (4: Steps) or by name; a dropdown's values; "Include Sub Images";
    "Vary seeds for X"; seeds drawn once; the grid saved with the plot's parameters."""
    outputs = api_server[1]
    before = set(outputs.rglob("*.png"))
    body = ok(alice.post("/sdapi/v1/txt2img", json={
        "prompt": "a red circle", "seed": -1, **SMALL, "save_images": True, "script_name": "X/Y/Z plot",
        "script_args": [4, "1, 2", None, "CFG Scale", "", ["1", "7"], 0, "", None,
                        True, True, False, False, True, False, False, 0, False]}))
    info = json.loads(body["info"])
    assert len(body["images"]) == 1 + 4 and info["index_of_first_image"] == 1
    grid, cells = decode(body["images"][0]), [decode(image) for image in body["images"][1:]]
    assert grid.width > 2 * 64 and grid.height > 2 * 64  # labelled
    seed = info["all_seeds"][0]
    assert info["all_seeds"] == [seed, seed + 1, seed, seed + 1]  # X fastest, the seed varied along X
    params = [parse_infotext(text)[2] for text in info["infotexts"]]
    assert [(p["Steps"], p["CFG scale"]) for p in params[1:]] == [("1", "1"), ("2", "1"), ("1", "7"), ("2", "7")]
    assert info["infotexts"][0].endswith(', Script: X/Y/Z plot, X Type: Steps, X Values: "1, 2", Y Type: CFG Scale, '
                                         'Y Values: "1,7"') and cells[3].info["parameters"] == info["infotexts"][4]
    assert grid.info["parameters"] == info["infotexts"][0]
    saved = set(outputs.rglob("*.png")) - before
    assert sorted(path.parent.parent.name for path in saved) == ["txt2img-grids"] + ["txt2img-images"] * 4
    title = next(model["title"] for model in ok(alice.get("/sdapi/v1/sd-models")) if model["model_name"] == "tiny-sd")
    bare = ok(alice.post("/sdapi/v1/txt2img", json={
        "prompt": "a red circle", "seed": 3, **SMALL, "script_name": "x/y/z plot",
        "script_args": ["Steps", "1, 2", None, "Checkpoint name", "", [title], 0, "", None, False]}))  # A1111's older
    assert len(bare["images"]) == 1 and decode(bare["images"][0]).size == (2 * 64, 64)  # no legend
    assert json.loads(bare["info"])["sd_model_name"] == "tiny-sd"  # the checkpoint's title read as A1111's


def test_loopback_and_sd_upscale_run_as_a1111s_img2img_scripts(alice):
    source = b64_png(Image.new("RGB", (64, 64), (200, 40, 40)))
    body = ok(alice.post("/sdapi/v1/img2img", json={
        "prompt": "a red square", "init_images": [source], "denoising_strength": 0.6, "seed": 5, **SMALL,
        "script_name": "Loopback", "script_args": [3, 0.4, "Lazy", "None"]}))
    info = json.loads(body["info"])
    assert len(body["images"]) == 4 and info["all_seeds"] == [5, 6, 7] and info["index_of_first_image"] == 1
    assert decode(body["images"][0]).width >= 3 * 64  # A1111's grid of the loops first
    assert [parse_infotext(text)[2]["Denoising strength"] for text in info["infotexts"][1:]] == [
        "0.6", "0.5414", "0.4"]
    upscalers = [item["name"] for item in ok(alice.get("/sdapi/v1/upscalers"))]
    body = ok(alice.post("/sdapi/v1/img2img", json={
        "prompt": "a red square", "init_images": [source], "denoising_strength": 0.6, "seed": 5, **SMALL,
        "script_name": "SD upscale", "script_args": [None, 16, upscalers.index("Nearest"), 2]}))
    params = parse_infotext(json.loads(body["info"])["infotexts"][0])[2]
    assert len(body["images"]) == 1 and decode(body["images"][0]).size == (128, 128)
    assert params["SD upscale upscaler"] == "Nearest" and params["SD upscale overlap"] == "16"


def test_soft_inpainting_as_a1111s_always_on_script(alice):
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    body = ok(alice.post("/sdapi/v1/img2img", json={
        "prompt": "a blue square", "init_images": [b64_png(Image.new("RGB", (64, 64), (200, 40, 40)))],
        "mask": b64_png(mask), "mask_blur": 8, "seed": 5, **SMALL,
        "alwayson_scripts": {"Soft Inpainting": {"args": [True, 2, 0.5]}}}))  # the later ones left out
    params = parse_infotext(json.loads(body["info"])["infotexts"][0])[2]
    assert params["Soft inpainting enabled"] == "True" and params["Soft inpainting schedule bias"] == "2"
    assert params["Soft inpainting difference contrast"] == "2"  # A1111's default
    again = ok(alice.post("/sdapi/v1/img2img", json={  # A1111 1.9's infotext fills the script's arguments too
        "infotext": json.loads(body["info"])["infotexts"][0], "init_images": [b64_png(Image.new("RGB", (64, 64)))],
        "mask": b64_png(mask), "mask_blur": 8, **SMALL}))
    assert parse_infotext(json.loads(again["info"])["infotexts"][0])[2]["Soft inpainting schedule bias"] == "2"


def test_freeu_rescale_cfg_and_pag_as_always_on_scripts(alice):
    """FreeU's args in Forge's order (enabled, b1, b2, s1, s2, start, end; the later ones may be left out), then
    its version; Forge Neo's
    RescaleCFG's [factor], Forge's PerturbedAttentionGuidance's [enabled, scale, attenuation, start, end]; all read
    back from the infotext."""
    body = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", "seed": 5, **SMALL, "alwayson_scripts": {
        "FreeU": {"args": [True, 1.2, 1.4, 0.9, 0.2, 0.1]}, "RescaleCFG": {"args": [0.7]},
        "PerturbedAttentionGuidance Integrated": {"args": [True, 2.5, 20, 0.1, 1]}}}))
    infotext = json.loads(body["info"])["infotexts"][0]
    params = parse_infotext(infotext)[2]
    assert (params["FreeU"], params["FreeU B1"], params["FreeU B2"], params["Rescale CFG"], params["PAG scale"]) == (
        "True", "1.2", "1.4", "0.7", "2.5")
    assert (params["PAG attenuation"], params["PAG start"]) == ("20", "0.1") and "PAG end" not in params
    assert (params["FreeU start"], params["FreeU end"], params["FreeU version"]) == ("0.1", "1", "1")
    forge = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", **SMALL, "alwayson_scripts": {
        "FreeU Integrated": {"args": [True, 1.01, 1.02, 0.99, 0.95]}}}))  # Forge's own: version 2
    assert "FreeU S2: 0.95, FreeU start: 0, FreeU end: 1, FreeU version: 2" in json.loads(forge["info"])["infotexts"][0]
    forge = ok(alice.post("/sdapi/v1/txt2img", json={**SMALL, "infotext": (  # Forge's own keys, from its pictures
        "a red circle\nSteps: 2, Sampler: Euler, Seed: 5, pagi_enabled: True, pagi_scale: 2, pagi_end_step: 0.5")}))
    assert "PAG scale: 2, PAG end: 0.5" in json.loads(forge["info"])["infotexts"][0]
    again = ok(alice.post("/sdapi/v1/txt2img", json={"infotext": infotext, **SMALL}))
    assert json.loads(again["info"])["infotexts"][0] == infotext
    off = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", **SMALL, "alwayson_scripts": {
        "freeu": {"args": [False, 1.2]}, "rescalecfg": {"args": [0]},
        "perturbedattentionguidance integrated": {"args": [False, 3]}}}))
    assert not {"FreeU", "Rescale CFG", "PAG scale"} & set(parse_infotext(json.loads(off["info"])["infotexts"][0])[2])


def test_self_attention_guidance_as_forges_and_the_extensions_always_on_scripts(alice):
    """Forge's SelfAttentionGuidance [enabled, scale, blur sigma, threshold] under either of its titles (the left out
    ones Forge's defaults), the A1111 extension's [enabled, scale, mask threshold] (its blur sigma is 1); the
    extension's keys in the infotext, read back."""
    def sag(title: str, args: list) -> str:
        body = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", "seed": 5, **SMALL,
                                                         "alwayson_scripts": {title: {"args": args}}}))
        return json.loads(body["info"])["infotexts"][0]

    infotext = sag("SelfAttentionGuidance Integrated (SD 1.x, SD 2.x, SDXL)", [True, 0.6, 2, 0.9])
    assert "SAG Guidance Scale: 0.6, SAG Blur Sigma: 2, SAG Mask Threshold: 0.9" in infotext, infotext
    assert "SAG Guidance Scale: 0.5, SAG Blur Sigma: 2, SAG Mask Threshold: 1" in sag(
        "SelfAttentionGuidance Integrated", [True])
    assert "SAG Guidance Scale: 0.75, SAG Blur Sigma: 1, SAG Mask Threshold: 1.2" in sag(
        "Self Attention Guidance", [True, 0.75, 1.2])
    assert "SAG" not in sag("Self Attention Guidance", [False, 0.75])
    again = ok(alice.post("/sdapi/v1/txt2img", json={"infotext": infotext, **SMALL}))
    assert json.loads(again["info"])["infotexts"][0] == infotext


def test_deep_shrink_as_forges_always_on_script_under_either_title(alice):
    """Forge's Kohya HRFix Integrated [enabled, block number, downscale factor, start percent, end percent,
    downscale after skip, downscale method, upscale method], its later title's with the second phase after them (the
    left out ones its defaults); its keys in the infotext, read back; a method Easel has not is refused."""
    def shrink(title: str, args: list) -> str:
        body = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", "seed": 5, **SMALL, "width": 96,
                                                         "height": 96, "alwayson_scripts": {title: {"args": args}}}))
        return json.loads(body["info"])["infotexts"][0]

    infotext = shrink("Kohya HRFix Integrated (SD1.x, SD2.x, SDXL)",
                      [True, 2, 1.5, 0, 0.5, False, "area", "bilinear", True])
    params = parse_infotext(infotext)[2]
    assert [params[f"kohya_hrfix_{key}"] for key in (
        "enabled", "block_number", "downscale_factor", "end_percent", "downscale_after_skip", "downscale_method",
        "upscale_method", "phase2")] == ["True", "2", "1.5", "0.5", "False", "area", "bilinear", "True"]
    assert "kohya_hrfix_block_number: 3, kohya_hrfix_downscale_factor: 2" in shrink("Kohya HRFix Integrated", [True])
    assert "kohya_hrfix" not in shrink("Kohya HRFix Integrated", [False, 2])
    again = ok(alice.post("/sdapi/v1/txt2img", json={"infotext": infotext, **SMALL, "width": 96, "height": 96}))
    assert json.loads(again["info"])["infotexts"][0] == infotext
    for args, words in (([True, 3, 2, 0, 0.35, True, "bislerp"], "Downscale Method is one of bicubic"),
                        ([True, 3, 2, 0, 0.35, True, "bicubic", "bicubic", True], "Kohya HRFix Integrated takes [")):
        refused = alice.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, "alwayson_scripts": {
            "Kohya HRFix Integrated": {"args": args}}})
        assert refused.status_code == 422 and words in refused.text, refused.text
        assert "alwayson_scripts.kohya hrfix integrated.args" in refused.text


def test_dynamic_thresholding_as_the_extensions_always_on_script(alice):
    """Its args in the extension's order (the later ones may be left out), its keys in the infotext, read back from
    it; a schedule it does not have is refused, naming its args."""
    body = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", "seed": 5, **SMALL, "cfg_scale": 20,
                                                     "alwayson_scripts": {"Dynamic Thresholding (CFG Scale Fix)": {
                                                         "args": [True, 6, 99.5, "Linear Down", 2]}}}))
    infotext = json.loads(body["info"])["infotexts"][0]
    params = parse_infotext(infotext)[2]
    assert (params["Dynamic thresholding enabled"], params["Mimic scale"], params["Threshold percentile"],
            params["Mimic mode"], params["Mimic scale minimum"]) == ("True", "6", "99.5", "Linear Down", "2")
    again = ok(alice.post("/sdapi/v1/txt2img", json={"infotext": infotext, **SMALL, "cfg_scale": 20}))
    assert json.loads(again["info"])["infotexts"][0] == infotext
    refused = alice.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, "alwayson_scripts": {
        "dynamic thresholding (cfg scale fix)": {"args": [True, 6, 100, "Wobbly"]}}})
    assert refused.status_code == 422
    assert "Mimic Scale Scheduler is one of Constant" in refused.text
    assert "alwayson_scripts.dynamic thresholding (cfg scale fix).args" in refused.text


def test_regional_prompter_as_the_extensions_always_on_script(alice):
    """Its arguments in the extension's order: active, debug, mode, matrix submode, mask submode, prompt submode,
    ratios, base ratios, use base, use common, ...; its default Attention mode runs as Latent."""
    args = [True, False, "Matrix", "Columns", "Mask", "Prompt", "2,1", "0.2", False, False, False, "Attention", [],
            "0", "0", "0.4", None, "0", "0", False]
    prompt = "a red circle BREAK a blue square"
    body = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": prompt, "seed": 5, **SMALL,
                                                     "alwayson_scripts": {"Regional Prompter": {"args": args}}}))
    infotext = json.loads(body["info"])["infotexts"][0]
    params = parse_infotext(infotext)[2]
    assert (params["RP Active"], params["RP Ratios"], params["RP Calc Mode"]) == ("True", "2,1", "Latent")
    flipped = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a ADDCOL b ADDROW c", "seed": 5, **SMALL,
                                                       "alwayson_scripts": {"regional prompter": {"args": [
                                                           *args[:6], "1;2;1,1;1", *args[7:19], True]}}}))
    assert parse_infotext(json.loads(flipped["info"])["infotexts"][0])[2]["RP Ratios"] == "1,2,1;1,1"  # its flip
    again = ok(alice.post("/sdapi/v1/txt2img", json={"infotext": infotext, **SMALL}))  # read back from the infotext
    assert json.loads(again["info"])["infotexts"][0] == infotext
    off = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": prompt, "seed": 5, **SMALL, "alwayson_scripts": {
        "Regional Prompter": {"args": [False, *args[1:]]}}}))
    assert "RP Active" not in json.loads(off["info"])["infotexts"][0]


def test_tiled_diffusion_as_the_extensions_always_on_script(alice):
    """Its args in the extension's order: enabled, method, overwrite size, keep input size, width, height, the tiles;
    the infotext fills them back; img2img keeps the input picture's size."""
    args = [True, "Mixture of Diffusers", True, True, 256, 128, 16, 16, 8, 2]
    body = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", "steps": 2, "seed": 3,
                                                     "alwayson_scripts": {"Tiled Diffusion": {"args": args}}}))
    info = json.loads(body["info"])
    assert decode(body["images"][0]).size == (256, 128) and (info["width"], info["height"]) == (256, 128)
    assert parse_infotext(info["infotexts"][0])[2]["Tiled Diffusion"] == (
        '{"Method": "Mixture of Diffusers", "Tile tile width": 16, "Tile tile height": 16, "Tile Overlap": 8, '
        '"Tile batch size": 2}')
    again = ok(alice.post("/sdapi/v1/txt2img", json={"infotext": info["infotexts"][0]}))
    assert json.loads(again["info"])["infotexts"][0] == info["infotexts"][0]
    kept = ok(alice.post("/sdapi/v1/img2img", json={"prompt": "a red circle", "steps": 2, "init_images": [
        b64_png(Image.new("RGB", (200, 136), "white"))], "alwayson_scripts": {"tiled diffusion": {"args": args}}}))
    assert decode(kept["images"][0]).size == (200, 136)
    upscale = [*args, "Lanczos", 1.5]  # the input picture upscaled first, then made in tiles
    body = ok(alice.post("/sdapi/v1/img2img", json={"prompt": "a red circle", "steps": 2, "init_images": [
        b64_png(Image.new("RGB", (200, 136), "white"))], "alwayson_scripts": {"tiled diffusion": {"args": upscale}}}))
    info = json.loads(body["info"])
    assert decode(body["images"][0]).size == (296, 200) and "Tiled Diffusion upscaler: Lanczos" in info["infotexts"][0]
    again = ok(alice.post("/sdapi/v1/img2img", json={"infotext": info["infotexts"][0], "init_images": [
        b64_png(Image.new("RGB", (200, 136), "white"))]}))
    assert decode(again["images"][0]).size == (296, 200)  # it kept the input's size: upscaled from it again


def test_dynamic_prompts_as_the_extensions_always_on_script(alice):
    """On when left out, as A1111 runs the extension: each picture of a template gets its own prompt (``all_prompts``,
    the infotexts); its arguments, in the extension's order under its title with a version, turn combinatorial
    generation on, or the extension off."""
    body = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a {red|blue} circle", "seed": 5, "batch_size": 3,
                                                     **SMALL}))
    info = json.loads(body["info"])
    assert info["prompt"] == "a {red|blue} circle" and set(info["all_prompts"]) <= {"a red circle", "a blue circle"}
    assert [parse_infotext(text)[0] for text in info["infotexts"]] == info["all_prompts"]
    args = [True, True, 1, False, False, False, 1.1, 1.5, 100, 0.7, False, False, True, False, False, 0]
    every = json.loads(ok(alice.post("/sdapi/v1/txt2img", json={
        "prompt": "a {red|blue|green} circle", "negative_prompt": "dark", "seed": 5, **SMALL,
        "alwayson_scripts": {"Dynamic Prompts v2.17.1": {"args": args}}}))["info"])
    assert every["all_prompts"] == ["a red circle", "a blue circle", "a green circle"]
    assert every["all_negative_prompts"] == ["dark"] * 3 and every["all_seeds"] == [5, 6, 7]
    off = json.loads(ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a {red|blue} circle", "seed": 5, **SMALL,
                                                                "alwayson_scripts": {"dynamic prompts": {"args": [
                                                                    False, *args[1:]]}}}))["info"])
    assert off["all_prompts"] == ["a {red|blue} circle"]
    ok(alice.post("/sdapi/v1/options", json={"dp_write_raw_template": True}))  # the extension's setting
    try:
        kept = json.loads(ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a {red|blue} circle", **SMALL}))["info"])
    finally:
        ok(alice.post("/sdapi/v1/options", json={"dp_write_raw_template": False}))
    assert kept["infotexts"][0].endswith("Version: easel-0.1.0\nTemplate: a {red|blue} circle")


def test_img2img_with_a_data_url_and_inpaint_with_a_mask(alice):
    source = Image.new("RGB", (96, 80), (200, 40, 40))
    body = ok(alice.post("/sdapi/v1/img2img", json={
        "prompt": "a red square", "init_images": [b64_png(source, data_url=True)], "denoising_strength": 0.5,
        "resize_mode": 1, "seed": 5, **SMALL}))
    info = json.loads(body["info"])
    assert body["parameters"]["init_images"] is None  # A1111 echoes them only with include_init_images
    image = decode(body["images"][0])
    assert image.size == (64, 64) and image.info["parameters"] == info["infotexts"][0]
    assert "Denoising strength: 0.5" in info["infotexts"][0] and info["denoising_strength"] == 0.5

    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    body = ok(alice.post("/sdapi/v1/img2img", json={
        "prompt": "a blue square", "init_images": [b64_png(source.resize((64, 64)))], "mask": b64_png(mask),
        "mask_blur": 2, "inpainting_fill": 1, "inpaint_full_res": False, "seed": 5, **SMALL}))
    params = parse_infotext(json.loads(body["info"])["infotexts"][0])[2]
    assert params["Mask blur"] == "2" and params["Masked content"] == "original"
    assert decode(body["images"][0]).size == (64, 64)


def test_the_infotext_field_fills_what_the_payload_leaves_unset(alice):
    text = ("a tree\nNegative prompt: fog\n"
            "Steps: 2, Sampler: Euler a, CFG scale: 4, Seed: 33, Size: 64x64, Model: tiny-sd, Tiling: True")
    info = json.loads(ok(alice.post("/sdapi/v1/txt2img", json={"infotext": text, "seed": 34}))["info"])
    assert (info["prompt"], info["negative_prompt"], info["steps"], info["sampler_name"], info["cfg_scale"],
            info["width"], info["seed"]) == ("a tree", "fog", 2, "Euler a", 4.0, 64, 34)
    assert "Tiling: True" in info["infotexts"][0]  # A1111's tiling, from the infotext as from the field


def test_the_asymmetric_tiling_script_wraps_one_axis(alice):
    """The extension's script: [tile X, tile Y]; its infotext keys, as it writes them."""
    body = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a tree", "script_name": "Asymmetric tiling",
                                                    "script_args": [False, True], **SMALL}))
    assert "Tile X: False, Tile Y: True" in json.loads(body["info"])["infotexts"][0]
    refused = alice.post("/sdapi/v1/txt2img", json={"prompt": "a tree", "script_name": "asymmetric tiling",
                                                     "script_args": [True], **SMALL})
    assert refused.status_code == 422 and "takes [tile X, tile Y]" in refused.text


def test_hires_fix(alice):
    body = ok(alice.post("/sdapi/v1/txt2img", json={
        "prompt": "a red circle", "seed": 9, "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Lanczos",
        "denoising_strength": 0.5, "hr_sampler_name": "Use same sampler", "hr_second_pass_steps": 2,
        "firstphase_width": 0, **SMALL}))
    info = json.loads(body["info"])
    assert decode(body["images"][0]).size == (128, 128) and info["denoising_strength"] == 0.5
    params = parse_infotext(info["infotexts"][0])[2]
    assert (params["Size"], params["Hires upscale"], params["Hires upscaler"], params["Hires steps"]) == (
        "64x64", "2", "Lanczos", "2")
    assert {"name": "Lanczos", "model_name": None, "model_path": None, "model_url": None, "scale": 4} in ok(
        alice.get("/sdapi/v1/upscalers"))
    first = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", "seed": 9, **SMALL}))["images"][0]
    given = ok(alice.post("/sdapi/v1/txt2img", json={  # A1111's firstpass_image: the first pass given, not run
        "prompt": "a red circle", "seed": 9, "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Lanczos",
        "denoising_strength": 0.5, "hr_second_pass_steps": 2, "firstpass_image": first, **SMALL}))
    assert decode(given["images"][0]).tobytes() == decode(body["images"][0]).tobytes()
    assert {"name": "Latent"} in ok(alice.get("/sdapi/v1/latent-upscale-modes"))


def test_extras_upscale_single_and_batch_pictures(alice):
    """A1111's ``extra-single-image`` and ``extra-batch-images``: the upscaler file in models/ESRGAN (x4), asked
    for 2x, gives twice the size; the picture keeps its parameters."""
    picture = Image.new("RGB", (48, 32), "red")
    picture.info["parameters"] = "a cat\nSteps: 2, Seed: 1, Size: 48x32"
    buffer = io.BytesIO()
    from pipelines.infotext import png_metadata

    picture.save(buffer, format="PNG", pnginfo=png_metadata(picture.info["parameters"]))
    body = ok(alice.post("/sdapi/v1/extra-single-image", json={
        "image": base64.b64encode(buffer.getvalue()).decode(), "upscaler_1": "tiny-x4", "upscaling_resize": 2}))
    upscaled = decode(body["image"])
    assert upscaled.size == (96, 64) and upscaled.info["parameters"].startswith("a cat\n")
    assert body["html_info"] == "Postprocess upscale by: 2, Postprocess upscaler: tiny-x4"
    body = ok(alice.post("/sdapi/v1/extra-batch-images", json={
        "imageList": [{"data": b64_png(picture), "name": "a.png"}, {"data": b64_png(picture), "name": "b.png"}],
        "resize_mode": 1, "upscaling_resize_w": 64, "upscaling_resize_h": 64, "upscaler_1": "Lanczos"}))
    assert [decode(image).size for image in body["images"]] == [(64, 64)] * 2
    assert {"name": "tiny-x4", "model_name": None, "model_path": None, "model_url": None, "scale": 4} in ok(
        alice.get("/sdapi/v1/upscalers"))
    for payload, field in (({"upscaler_1": "nope"}, "upscaler_1"), ({"gfpgan_visibility": 1}, "gfpgan_visibility"),
                           ({"upscaling_resize": 20}, "upscaling_resize")):
        response = alice.post("/sdapi/v1/extra-single-image", json={"image": b64_png(picture), **payload})
        assert response.status_code == 422 and response.json()["field"] == field, response.text


def test_save_images_writes_the_same_file_the_ui_writes(alice, api_server):
    outputs = api_server[1]
    before = set(outputs.rglob("*.png"))
    body = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "saved", "seed": 21, "save_images": True, **SMALL}))
    new = sorted(set(outputs.rglob("*.png")) - before)
    assert len(new) == 1 and new[0].parent.parent.name == "txt2img-images" and new[0].name.endswith("-21.png")
    with Image.open(new[0]) as image:
        assert image.info["parameters"] == json.loads(body["info"])["infotexts"][0]


def test_a_batch_answers_its_grid_first_when_saved_as_a1111(alice, api_server):
    """A1111's API makes the grid of a job's pictures only with ``save_images`` (its ``do_not_save_grid``)."""
    outputs = api_server[1]
    before = set(outputs.rglob("*.png"))
    payload = {"prompt": "a grid", "seed": 8, "batch_size": 2, "n_iter": 2, **SMALL}
    body = ok(alice.post("/sdapi/v1/txt2img", json={**payload, "save_images": True}))
    info = json.loads(body["info"])
    assert len(body["images"]) == 5 and info["index_of_first_image"] == 1 and info["all_seeds"] == [8, 9, 10, 11]
    grid, *each = (decode(image).convert("RGB") for image in body["images"])
    assert grid.size == (128, 128) and grid.crop((64, 64, 128, 128)).tobytes() == each[3].tobytes()
    assert info["infotexts"][0] == info["infotexts"][1]
    saved = sorted(set(outputs.rglob("*.png")) - before)
    assert [path.parent.parent.name for path in saved].count("txt2img-grids") == 1 and len(saved) == 5
    plain = ok(alice.post("/sdapi/v1/txt2img", json=payload))
    assert len(plain["images"]) == 4 and json.loads(plain["info"])["index_of_first_image"] == 0


def test_save_images_false_writes_nothing(alice, api_server):
    outputs = api_server[1]
    before = set(outputs.rglob("*.png"))
    body = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "not saved", "save_images": False, **SMALL}))
    assert len(body["images"]) == 1 and set(outputs.rglob("*.png")) == before
    ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "default", **SMALL}))  # A1111's API default: not saved
    assert set(outputs.rglob("*.png")) == before


# -- options and models ---------------------------------------------------------------------------------------
def test_lists_in_a1111_shapes(alice):
    models = ok(alice.get("/sdapi/v1/sd-models"))
    by_name = {m["model_name"]: m for m in models}
    assert {"tiny-sd", "tiny-sdxl"} <= set(by_name)
    entry = by_name["tiny-sd"]
    assert entry["title"] == f"tiny-sd [{entry['hash']}]" and len(entry["hash"]) == 10
    assert set(entry) == {"title", "model_name", "hash", "sha256", "filename", "config"}
    samplers = ok(alice.get("/sdapi/v1/samplers"))
    assert {"name": "Euler a", "aliases": ["k_euler_a", "euler_ancestral"], "options": {}} in samplers
    assert {"karras", "automatic"} <= {s["name"] for s in ok(alice.get("/sdapi/v1/schedulers"))}
    assert ok(alice.get("/sdapi/v1/loras")) == []
    assert ok(alice.get("/sdapi/v1/embeddings")) == {"loaded": {}, "skipped": {}}
    assert alice.post("/sdapi/v1/refresh-checkpoints").status_code == 200


def test_options_switch_the_model(alice):
    models = {m["model_name"]: m["title"] for m in ok(alice.get("/sdapi/v1/sd-models"))}
    assert ok(alice.get("/sdapi/v1/options"))["sd_model_checkpoint"] == models["tiny-sd"]
    try:
        ok(alice.post("/sdapi/v1/options", json={"sd_model_checkpoint": models["tiny-sdxl"]}))
        assert ok(alice.get("/sdapi/v1/options"))["sd_model_checkpoint"] == models["tiny-sdxl"]
        info = json.loads(ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL}))["info"])
        assert info["sd_model_name"] == "tiny-sdxl"
        override = {"override_settings": {"sd_model_checkpoint": "tiny-sd", "CLIP_stop_at_last_layers": 2}}
        info = json.loads(ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "x", **override, **SMALL}))["info"])
        assert info["sd_model_name"] == "tiny-sd" and info["clip_skip"] == 2 and "Clip skip: 2" in info["infotexts"][0]
        assert ok(alice.get("/sdapi/v1/options"))["sd_model_checkpoint"] == models["tiny-sdxl"]  # restored
    finally:
        ok(alice.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd"}))


@pytest.mark.parametrize("name", ["../tiny-sd", "../../etc/passwd", "/etc/passwd", "Stable-diffusion/../tiny-sd",
                                  "C:\\models\\x.safetensors"])
def test_model_names_are_names_not_paths(alice, name):
    response = alice.post("/sdapi/v1/options", json={"sd_model_checkpoint": name})
    assert response.status_code == 422 and response.json()["field"] == "sd_model_checkpoint"
    response = alice.post("/sdapi/v1/txt2img", json={"prompt": "x", "override_settings": {"sd_model_checkpoint": name},
                                                     **SMALL})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "override_settings.sd_model_checkpoint"
    assert "Unknown model" in response.json()["detail"]


def test_png_info(alice):
    body = ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "a moon", "seed": 9, **SMALL}))
    info = ok(alice.post("/sdapi/v1/png-info", json={"image": "data:image/png;base64," + body["images"][0]}))
    assert info["info"] == json.loads(body["info"])["infotexts"][0]
    assert info["parameters"]["Prompt"] == "a moon" and info["parameters"]["Seed"] == "9"
    assert info["parameters"]["Size-1"] == "64" and info["parameters"]["Size-2"] == "64"
    plain = ok(alice.post("/sdapi/v1/png-info", json={"image": b64_png(Image.new("RGB", (8, 8)))}))
    assert plain["info"] == ""


# -- progress, interrupt, and the shared queue ----------------------------------------------------------------
def test_progress_moves_and_only_the_owner_can_interrupt(alice, bob):
    progress = lambda client: ok(client.get("/sdapi/v1/progress"))  # noqa: E731
    result = {}
    job = threading.Thread(target=lambda: result.setdefault("response", alice.post(
        "/sdapi/v1/txt2img", json={"prompt": "slow", "steps": 150, "n_iter": 3, "width": 64, "height": 64})))
    job.start()
    try:
        first = wait_for(lambda: progress(alice), lambda p: p["progress"] > 0)
        assert first["state"]["job_count"] == 3 and first["state"]["sampling_steps"] == 150
        assert first["eta_relative"] > 0
        seen_by_bob = progress(bob)
        assert seen_by_bob["progress"] == 0 and seen_by_bob["state"]["job"] == ""  # not bob's job
        assert ok(bob.post("/sdapi/v1/interrupt")) == {}
        preview = wait_for(lambda: progress(alice), lambda p: p["current_image"] and p["progress"] > first["progress"])
        assert not preview["state"]["interrupted"]  # bob's interrupt did not touch alice's job
        assert decode(preview["current_image"]).size == (32, 32)  # a pixel per latent, as A1111's Approx cheap
        assert progress(alice)["current_image"] and not ok(
            alice.get("/sdapi/v1/progress", params={"skip_current_image": True}))["current_image"]
        ok(alice.post("/sdapi/v1/interrupt"))
    finally:
        job.join(120)
    body = ok(result["response"])
    assert len(body["images"]) == 1  # stopped in the first of three batches, what it reached is returned
    assert progress(alice)["progress"] == 0


def test_api_and_ui_jobs_share_one_queue(url, alice):
    from gradio_client import Client

    ui = Client(url, auth=("ui", "secret"), verbose=False)
    done = {}

    def api_job():
        ok(alice.post("/sdapi/v1/txt2img", json={"prompt": "slow", "steps": 60, "width": 64, "height": 64}))
        done["api"] = time.monotonic()

    job = threading.Thread(target=api_job)
    job.start()
    wait_for(lambda: ok(alice.get("/sdapi/v1/progress")), lambda p: p["progress"] > 0)
    no_control = {f"cn{i}_image": None for i in range(3)}  # the Gradio client needs every image input named
    ui.predict(**no_control, prompt="quick", steps=1, width=64, height=64, api_name="/txt2img")
    done["ui"] = time.monotonic()
    job.join(120)
    assert done["ui"] > done["api"]  # the UI job waited for the device


# -- bad input, size limits and authentication ----------------------------------------------------------------
PNG = b64_png(Image.new("RGB", (64, 64), (10, 200, 10)))


@pytest.mark.parametrize("route, payload, field", [
    ("txt2img", {"prompt": 123}, "prompt"),
    ("txt2img", {"prompt": ["a", "b"]}, "prompt"),
    ("txt2img", {"prompt": "x", "steps": -1}, "steps"),
    ("txt2img", {"prompt": "x", "steps": "many"}, "steps"),
    ("txt2img", {"prompt": "x", "sampler_name": "Nope"}, "sampler_name"),
    ("txt2img", {"prompt": "x", "sampler_index": "Nope"}, "sampler_name"),
    ("txt2img", {"prompt": "x", "scheduler": "wobbly"}, "scheduler"),
    ("txt2img", {"prompt": "x", "width": 65}, "width"),
    ("txt2img", {"prompt": "x", "n_iter": 0}, "n_iter"),
    ("txt2img", {"prompt": "x", "cfg_scale": "lots"}, "cfg_scale"),
    ("txt2img", {"prompt": "x", "override_settings": {"CLIP_stop_at_last_layers": 20}},
     "override_settings.CLIP_stop_at_last_layers"),
    ("txt2img", {"prompt": "x", "enable_hr": True, "hr_scale": 9}, "hr_scale"),
    ("txt2img", {"prompt": "x", "enable_hr": True, "hr_upscaler": "ESRGAN_4x"}, "hr_upscaler"),
    ("txt2img", {"prompt": "x", "enable_hr": True, "hr_sampler_name": "Nope"}, "hr_sampler_name"),
    ("txt2img", {"prompt": "x", "enable_hr": True, "hr_scheduler": "wobbly"}, "hr_scheduler"),
    ("txt2img", {"prompt": "x", "enable_hr": True, "hr_checkpoint_name": "nope"}, "hr_checkpoint_name"),
    ("txt2img", {"prompt": "x", "refiner_checkpoint": "nope"}, "refiner_checkpoint"),
    ("txt2img", {"prompt": "x", "refiner_checkpoint": "tiny-sdxl"}, "refiner_checkpoint"),  # another family
    ("txt2img", {"prompt": "x", "refiner_checkpoint": "tiny-sd", "refiner_switch_at": 0}, "refiner_switch_at"),
    ("txt2img", {"prompt": "x", "seed_resize_from_w": 60, "seed_resize_from_h": 64}, "seed_resize_from_w"),
    ("txt2img", {"prompt": "x", "seed_resize_from_w": 64}, "seed_resize_from_w"),  # half of a size
    ("txt2img", {"prompt": "x", "enable_hr": True, "denoising_strength": 0.1}, "denoising_strength"),
    ("txt2img", {"prompt": "x", "firstpass_image": PNG}, "firstpass_image"),  # hires fix's
    ("txt2img", {"prompt": "x", "enable_hr": True, "firstpass_image": "not a picture"}, "firstpass_image"),
    ("img2img", {"prompt": "x", "init_images": [PNG], "enable_hr": True}, "enable_hr"),
    ("txt2img", {"prompt": "x", "alwayson_scripts": {"controlnet": {"args": [{"module": "canny"}]}}},
     "alwayson_scripts.controlnet.args"),  # no model
    ("txt2img", {"prompt": "x", "alwayson_scripts": {"ADetailer": {"args": []}}}, "alwayson_scripts.ADetailer"),
    ("txt2img", {"prompt": "a BREAK b BREAK c", "alwayson_scripts": {"Regional Prompter": {"args": [
        True, False, "Matrix", "Columns", "Mask", "Prompt", "1,1"]}}}, "alwayson_scripts.regional prompter.args"),
    ("txt2img", {"prompt": "a BREAK b", "alwayson_scripts": {"Regional Prompter": {"args": [True, False, "Mask"]}}},
     "alwayson_scripts.regional prompter.args"),  # its Mask mode is not built
    ("txt2img", {"prompt": "x", "alwayson_scripts": {"Dynamic Prompts v2.17.1": {"args": [True, False, 1, True]}}},
     "alwayson_scripts.dynamic prompts.args"),  # its Magic prompt is a download
    ("txt2img", {"prompt": "x", "alwayson_scripts": {"Dynamic Prompts": {"args": "on"}}},
     "alwayson_scripts.dynamic prompts.args"),
    ("txt2img", {"prompt": "x", "alwayson_scripts": {"Tiled Diffusion": {"args": [
        True, "MultiDiffusion", False, True, 1024, 1024, 96, 96, 48, 4, "None", 2, True]}}},
     "alwayson_scripts.tiled diffusion.args"),  # its noise inversion is not built
    ("txt2img", {"prompt": "x", "tiling": True, "alwayson_scripts": {"Tiled Diffusion": {"args": [True]}}},
     "tiling"),
    ("img2img", {"prompt": "x", "init_images": [PNG], "alwayson_scripts": {"Tiled Diffusion": {"args": [
        True, "MultiDiffusion", False, True, 1024, 1024, 96, 96, 48, 4, "4x-Nowhere", 2]}}},
     "alwayson_scripts.tiled diffusion.args"),  # no such upscaler
    ("txt2img", {"prompt": "a {red|blue"}, "prompt"),  # Dynamic Prompts cannot read it
    ("txt2img", {"prompt": "a __nothing__"}, "prompt"),  # no wildcard file
    ("txt2img", {"prompt": "{1|2|3|4|5|6|7|8|9|10} {1|2|3|4|5|6|7|8|9|10} {a|b}", "alwayson_scripts": {
        "Dynamic Prompts": {"args": [True, True, 1, *[False] * 12, 1000]}}},
     "alwayson_scripts.dynamic prompts.args"),  # past 100 batches
    ("txt2img", {"prompt": "x", "script_name": "Poor man's outpainting"}, "script_name"),
    ("txt2img", {"prompt": "x", "script_name": "x/y/z plot"}, "script_args"),  # no axes
    ("txt2img", {"prompt": "x", "script_name": "x/y/z plot", "script_args": [21, "0, 1", None, *XYZ_NOTHING]},
     "script_args"),  # A1111's Beta schedule alpha
    ("txt2img", {"prompt": "x", "script_name": "x/y/z plot", "script_args": [42, "1", None, *XYZ_NOTHING]},
     "script_args"),  # past the list
    ("txt2img", {"prompt": "x", "script_name": "x/y/z plot", "script_args": ["Steps", "few", None, *XYZ_NOTHING]},
     "script_args"),
    ("img2img", {"prompt": "x", "init_images": [PNG], "script_name": "x/y/z plot",
                 "script_args": ["Steps", "1", None, *XYZ_NOTHING, True, False, False, False, 9000]}, "script_args"),
    ("txt2img", {"prompt": "x", "script_name": "Prompts from file or textbox", "script_args": [1]}, "script_args"),
    ("txt2img", {"prompt": "x", "script_name": "prompt matrix", "script_args": [True]}, "script_args"),
    ("txt2img", {"prompt": "x", "script_name": "prompt matrix", "script_args": [True, False]}, "prompt"),  # no |
    ("txt2img", {"prompt": "a|b", "script_name": "prompt matrix", "script_args": [True, False, "positive", "comma",
                                                                                  -4]}, "script_args"),  # margin
    ("txt2img", {"prompt": "x", "script_name": "Prompts from file or textbox",
                 "script_args": [False, False, "start", "a\n--steps lots"]}, "script_args"),
    ("txt2img", {"prompt": "x", "script_name": "Loopback", "script_args": [2]}, "script_name"),  # img2img's
    ("img2img", {"prompt": "x", "init_images": [PNG], "script_name": "Loopback", "script_args": [2, 0.5, "Up"]},
     "script_args"),
    ("img2img", {"prompt": "x", "init_images": [PNG], "script_name": "Loopback", "script_args": [2, 0.5, "Lazy",
                                                                                                "CLIP"]},
     "script_args"),
    ("img2img", {"prompt": "x", "init_images": [PNG], "script_name": "SD upscale", "script_args": [None, 16, 99, 2]},
     "script_args"),
    ("img2img", {"prompt": "x", "init_images": [PNG], "script_name": "SD upscale",
                 "script_args": [None, 16, "Magic", 2]}, "script_args"),
    ("img2img", {"prompt": "x", "init_images": [PNG], "script_name": "SD upscale", "script_args": [16, 1, 2]},
     "script_args"),
    ("img2img", {"prompt": "x", "init_images": [PNG], "mask": PNG,
                 "alwayson_scripts": {"soft inpainting": {"args": [True, 1, 0.5, 40]}}},
     "alwayson_scripts.soft inpainting.args"),  # past the transition contrast boost's slider
    ("img2img", {"prompt": "x", "init_images": [PNG], "alwayson_scripts": {"soft inpainting": {"args": 3}}},
     "alwayson_scripts.soft inpainting.args"),
    ("txt2img", {"prompt": "x", "alwayson_scripts": {"FreeU": {"args": [True, 9]}}}, "alwayson_scripts.freeu.args"),
    ("txt2img", {"prompt": "x", "alwayson_scripts": {"FreeU": {"args": [True, 1.3, 1.4, 0.9, 0.2, 0, 1, 3]}}},
     "alwayson_scripts.freeu.args"),  # no version 3
    ("txt2img", {"prompt": "x", "alwayson_scripts": {"RescaleCFG": {"args": [0.7, 1]}}},
     "alwayson_scripts.rescalecfg.args"),
    ("txt2img", {"prompt": "x", "alwayson_scripts": {"RescaleCFG": {"args": [2]}}}, "alwayson_scripts.rescalecfg.args"),
    ("txt2img", {"prompt": "x", "alwayson_scripts": {"PerturbedAttentionGuidance Integrated": {"args": [
        True, 3, 0, 0.8, 0.2]}}}, "alwayson_scripts.perturbedattentionguidance integrated.args"),  # ends first
    ("txt2img", {"prompt": "x", "alwayson_scripts": {"PerturbedAttentionGuidance Integrated": {"args": [
        True, -3]}}}, "alwayson_scripts.perturbedattentionguidance integrated.args"),
    ("txt2img", {"prompt": "x", "alwayson_scripts": {"SelfAttentionGuidance Integrated": {"args": [True, 9]}}},
     "alwayson_scripts.selfattentionguidance integrated.args"),  # past its scale's slider
    ("txt2img", {"prompt": "x", "alwayson_scripts": {"Self Attention Guidance": {"args": [True, 0.75, 1, 2]}}},
     "alwayson_scripts.self attention guidance.args"),  # its args are 3
    ("img2img", {"prompt": "x"}, "init_images"),
    ("img2img", {"prompt": "x", "init_images": [base64.b64encode(b"hello, not an image").decode()]}, "init_images"),
    ("img2img", {"prompt": "x", "init_images": ["data:image/png;base64,%%%"]}, "init_images"),
    ("img2img", {"prompt": "x", "init_images": ["https://example.com/cat.png"]}, "init_images"),
    ("img2img", {"prompt": "x", "init_images": [PNG], "mask": "bm90IGFuIGltYWdl"}, "mask"),
    ("img2img", {"prompt": "x", "init_images": [PNG], "denoising_strength": 2}, "denoising_strength"),
    ("img2img", {"prompt": "x", "init_images": [PNG], "resize_mode": 4}, "resize_mode"),
    ("txt2img", {"prompt": "x", "subseed_strength": 2}, "subseed_strength"),
    ("txt2img", {"prompt": "x", "eta": 3}, "eta"),
    ("txt2img", {"prompt": "x", "override_settings": {"sd_noise_schedule": "ZTSNR"}},
     "override_settings.sd_noise_schedule"),
    ("txt2img", {"prompt": "x", "override_settings": {"uni_pc_variant": "vary_coeff"}},
     "override_settings.uni_pc_variant"),
    ("txt2img", {"prompt": "x", "s_churn": -1}, "s_churn"),
    ("txt2img", {"prompt": "x", "override_settings": {"eta_noise_seed_delta": -1}},
     "override_settings.eta_noise_seed_delta"),
    ("img2img", {"prompt": "x", "init_images": [PNG], "override_settings": {"img2img_extra_noise": 2}},
     "override_settings.img2img_extra_noise"),
    ("txt2img", {"prompt": "x", "override_settings": {"sigma_min": 5, "sigma_max": 2}}, "override_settings.sigma_min"),
    ("img2img", {"prompt": "x", "init_images": [PNG], "initial_noise_multiplier": 2}, "initial_noise_multiplier"),
    ("img2img", {"prompt": "x", "init_images": [PNG], "override_settings": {"initial_noise_multiplier": "loud"}},
     "initial_noise_multiplier"),
    ("png-info", {"image": "aGVsbG8="}, "image"),
])
def test_bad_payloads_answer_422_naming_the_field(alice, route, payload, field):
    response = alice.post(f"/sdapi/v1/{route}", json={**SMALL, **payload} if route != "png-info" else payload)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field and body["detail"].startswith(f"{field}: ")
    assert alice.get("/sdapi/v1/options").status_code == 200  # still serving


@pytest.mark.parametrize("side", [8500, 9500, 15000])  # past ours, past PIL's warning, past PIL's refusal
def test_a_picture_past_the_size_limit_is_called_too_large_not_unreadable(side):
    import io

    from api.encoding import PayloadError, decode_image

    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, "PNG")  # a few KB of PNG, hundreds of MB of pixels
    with pytest.raises(PayloadError, match="larger than this server accepts .at most 8192x8192"):
        decode_image(base64.b64encode(buffer.getvalue()).decode(), "init_images")


def test_a_body_that_is_not_json_answers_422(alice):
    response = alice.post("/sdapi/v1/txt2img", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error"] == "RequestValidationError"


def test_a_100_mb_body_is_refused_before_it_is_read(url, alice):
    import socket
    from urllib.parse import urlparse

    # Declared size: refused from the headers alone, though only a few bytes of the body were ever sent.
    parts = urlparse(url)
    credentials = base64.b64encode(b"alice:wonderland").decode()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(f"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Basic {credentials}"
                     f"\r\nContent-Type: application/json\r\nContent-Length: {100 * 2**20}\r\n\r\n{{\"pro".encode())
        answer = b""
        while b"PayloadTooLarge" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b"PayloadTooLarge" in answer

    # Streamed without a declared size: cut off once past the limit.
    def chunks():
        for _ in range(100):
            yield b" " * 2**20

    response = alice.post("/sdapi/v1/txt2img", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"] == "PayloadTooLarge"
    response = alice.post("/sdapi/v1/txt2img", content=b" " * (100 * 2**20),
                          headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert alice.get("/sdapi/v1/options").status_code == 200


def test_api_auth_is_enforced_and_independent_of_the_ui_login(url):
    for auth in (None, ("alice", "wrong"), ("nobody", "wonderland"), ("ui", "secret")):
        response = httpx.get(f"{url}/sdapi/v1/sd-models", auth=auth)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Basic"
        assert response.json()["error"] == "Unauthorized"
        assert httpx.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "x"}, auth=auth).status_code == 401
    assert httpx.get(f"{url}/sdapi/v1/sd-models", auth=BOB).status_code == 200
    assert httpx.get(f"{url}/config").status_code == 401  # the UI keeps its own login


def test_openapi_schema_and_docs(url):
    schema = httpx.get(f"{url}/openapi.json").json()
    for path in ("txt2img", "img2img", "progress", "interrupt", "skip", "options", "sd-models", "samplers",
                 "schedulers", "loras", "embeddings", "upscalers", "latent-upscale-modes", "png-info",
                 "refresh-checkpoints"):
        assert f"/sdapi/v1/{path}" in schema["paths"]
    assert "steps" in schema["components"]["schemas"]["Txt2ImgPayload"]["properties"]
    assert "init_images" in schema["components"]["schemas"]["Img2ImgPayload"]["properties"]
    assert httpx.get(f"{url}/docs").status_code == 200


def test_the_api_is_off_unless_enabled(app_url):
    assert httpx.get(f"{app_url.rstrip('/')}/sdapi/v1/sd-models").status_code == 404


# -- flags ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, api_on, missing", [
    ([], True, None),
    (["--no-api"], False, None),
    (["--host", "0.0.0.0", "--auth", "u:p"], False, None),
    (["--host", "0.0.0.0", "--auth", "u:p", "--api"], True, "--api-auth"),
    (["--host", "0.0.0.0", "--auth", "u:p", "--api", "--api-auth", "a:b"], True, None),
    (["--share", "--auth", "u:p", "--api"], True, "--api-auth"),
    (["--share", "--api", "--api-auth", "a:b"], True, "--auth"),
    (["--host", "0.0.0.0", "--api"], True, "--auth"),
    (["--host", "0.0.0.0", "--api", "--insecure"], True, None),
    (["--share", "--auth", "u:p", "--api", "--insecure"], True, None),
])
def test_exposure_needs_auth_for_the_ui_and_the_api(argv, api_on, missing):
    args = app.parse_args(argv)
    assert app.api_enabled(args) == api_on
    problem = app.exposure_problem(args, on_space=False)
    assert (problem is None) == (missing is None)
    if missing:
        assert f"add {missing} " in problem


def test_main_refuses_an_exposed_api_without_api_auth(capsys):
    with pytest.raises(SystemExit) as stop:
        app.main(["--host", "0.0.0.0", "--auth", "u:p", "--api"])
    assert stop.value.code == 2 and "--api-auth" in capsys.readouterr().err


def test_ui_logins_from_auth_and_auth_file(tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("bob:two\n")
    args = app.parse_args(["--auth", "alice:one", "--auth-file", str(users)])
    assert app.ui_credentials(args) == [("alice", "one"), ("bob", "two")]
    with pytest.raises(SystemExit, match="--auth-file"):
        app.ui_credentials(app.parse_args(["--auth-file", str(tmp_path / "missing.txt")]))
    with pytest.raises(SystemExit, match="--api-auth: expected user:password"):
        app.parse_auth("nopassword", "--api-auth")
