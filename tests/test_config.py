"""A1111's settings (``pipelines/config.py``), kept in config.json, and the saving options they drive: file name
patterns, text files beside pictures, the JPEG quality; the tabs' saved defaults (A1111's ui-config.json)."""

import base64
import datetime
import hashlib
import io
import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
from PIL import Image

from pipelines.config import OPTIONS, Config
from pipelines.errors import RequestError
from pipelines.filenames import Naming, check, file_stem
from pipelines.infotext import read_infotext
from pipelines.outputs import OutputWriter

INFOTEXT = ('a red circle, on "white": big\nNegative prompt: blue/green\n'
            "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 64x48, Model hash: 0123456789, Model: easel")


def test_defaults_are_a1111s_where_a1111_has_the_option():
    config = Config()
    assert (config["samples_save"], config["samples_format"], config["jpeg_quality"], config["grid_save"],
            config["n_rows"], config["return_grid"], config["CLIP_stop_at_last_layers"]) == (
        True, "png", 80, True, -1, True, 1)
    sampling = ("eta_ddim", "eta_ancestral", "s_churn", "s_tmin", "s_tmax", "s_noise", "sigma_min", "sigma_max", "rho",
                "sd_noise_schedule", "uni_pc_variant", "uni_pc_order", "uni_pc_lower_order_final", "eta_noise_seed_delta")
    assert [config[key] for key in sampling] == [0, 1, 0, 0, 0, 1, 0, 0, 0, "Default", "bh1", 3, True, 0]
    assert len({option.key for option in OPTIONS}) == len(OPTIONS)


def test_changes_are_kept_in_the_file_with_the_keys_easel_does_not_know(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"sd_checkpoint_hash": "abc", "jpeg_quality": 90, "show_progress_type": "TAESD"}))
    config = Config(path)
    assert config["jpeg_quality"] == 90 and not config.warnings
    assert config.update({"samples_format": "webp", "jpeg_quality": 90, "unknown_option": 1}) == ["samples_format"]
    kept = json.loads(path.read_text())
    assert kept == {"sd_checkpoint_hash": "abc", "jpeg_quality": 90, "show_progress_type": "TAESD",
                    "samples_format": "webp"}
    assert Config(path)["samples_format"] == "webp"  # after a restart
    assert not list(tmp_path.glob(".config-*"))  # written under a temporary name, then renamed


def test_a_refused_value_changes_nothing_and_names_the_option(tmp_path):
    config = Config(tmp_path / "config.json")
    for values, field in (({"samples_format": "webp", "jpeg_quality": 101}, "jpeg_quality"),
                          ({"samples_save": "no"}, "samples_save"),
                          ({"CLIP_stop_at_last_layers": 0.5}, "CLIP_stop_at_last_layers"),
                          ({"initial_noise_multiplier": 2}, "initial_noise_multiplier"),
                          ({"samples_filename_pattern": "[seed]-[colour]"}, "samples_filename_pattern"),
                          ({"training_write_csv_every": -1}, "training_write_csv_every"),
                          ({"dataset_filename_word_regex": "[a-"}, "dataset_filename_word_regex"),
                          ({"samples_format": "gif"}, "samples_format")):
        with pytest.raises(RequestError) as caught:
            config.update(values)
        assert caught.value.field == field
    assert str(caught.value).startswith("File format for images must be one of png, jpg, webp")
    with pytest.raises(RequestError, match=r"Unknown token \[colour\] in the file name pattern; the tokens are "):
        config.update({"samples_filename_pattern": "[colour]"})
    assert config["samples_format"] == "png" and not (tmp_path / "config.json").exists()


def test_a_bad_file_is_a_warning_not_a_failed_start(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    config = Config(path)
    assert config["samples_format"] == "png" and "could not be read" in config.warnings[0]
    path.write_text("[1, 2]")
    assert "holds list, not a JSON object; using the defaults." in Config(path).warnings[0]
    path.write_text(json.dumps({"samples_format": "gif", "n_rows": 3}))
    config = Config(path)
    assert (config["samples_format"], config["n_rows"]) == ("png", 3)
    assert "File format for images must be one of png, jpg, webp, got 'gif'" in config.warnings[0]


def test_a_flags_value_wins_for_the_run_and_is_never_written(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"samples_save": True}))
    config = Config(path, {"samples_save": False})
    assert config["samples_save"] is False
    config.update({"jpeg_quality": 70})
    assert json.loads(path.read_text()) == {"samples_save": True, "jpeg_quality": 70}


def test_file_name_patterns_take_the_pictures_parameters_safely():
    when = datetime.datetime(2026, 11, 23, 9, 8, 7)
    assert file_stem("[none]", INFOTEXT) == ""  # A1111's name that is the number alone
    assert file_stem("[seed]-[steps]-[cfg]-[sampler]-[width]x[height]", INFOTEXT) == "5-20-7-Euler a-64x48"
    assert file_stem("[model_name] [model_hash] [date] [datetime]", INFOTEXT, now=when) == (
        "easel 0123456789 2026-11-23 20261123090807")
    assert file_stem("[prompt]", INFOTEXT) == "a_red_circle,_on__white___big"  # no quotes, colons or spaces
    assert file_stem("[prompt_spaces]", INFOTEXT) == "a red circle, on _white__ big"
    assert file_stem("[prompt_words]", INFOTEXT) == "a red circle on white big"
    assert file_stem("[negative_prompt]", INFOTEXT) == "blue_green"  # never a path
    assert file_stem("../[SEED]/x", INFOTEXT, seed=9) == "_9_x"  # the seed given wins; tokens in any case
    assert len(file_stem("[prompt][prompt][prompt]", "x" * 500 + "\nSteps: 1, Seed: 1, Size: 8x8").encode()) == 200
    # A1111's [datetime<format><zone>] (a value's "/" made "_"), hashes of the prompts, the VAE's file
    utc = datetime.datetime(2026, 11, 23, 9, 8, 7, tzinfo=datetime.timezone.utc)
    assert file_stem("[datetime<%Y/%m-%H%M>] [datetime<%H><Asia/Tokyo>]", INFOTEXT, now=utc) == "2026_11-0908 18"
    assert file_stem("[prompt_hash] [negative_prompt_hash]", INFOTEXT) == " ".join(
        hashlib.sha256(text.encode()).hexdigest()[:8] for text in ('a red circle, on "white": big', "blue/green"))
    assert file_stem("[full_prompt_hash]", INFOTEXT) == hashlib.sha256(
        b'a red circle, on "white": big blue/green').hexdigest()[:8]
    assert file_stem("[vae_filename]", INFOTEXT + ", VAE: sdxl_vae.safetensors") == "sdxl_vae"
    assert file_stem("[vae_filename]", INFOTEXT) == "NoneType"  # A1111's word for none
    for bad, message in (("[datetime<%H><Mars/Olympus>]", "Unknown time zone 'Mars/Olympus'"),
                         ("[seed<%H>]", r"\[seed\] takes no <arguments>"),
                         ("[prompt_hash<4><5>]", r"takes 1 <argument>;"),
                         ("[image_hash<x>]", "a hash's length is a whole number")):
        with pytest.raises(RequestError, match=message):
            check(bad, "samples_filename_pattern")


def test_file_name_patterns_say_the_job_and_the_picture():
    """A1111's tokens that read the job (its styles, seeds, batch, start) and the picture itself; a token with no
    value is left out with the text before it ([batch_number] alone in its batch, [denoising] in txt2img)."""
    picture = Image.new("RGB", (64, 48), "red")
    started = datetime.datetime(2026, 11, 23, 9, 8, 7)
    job = Naming("a red circle", ("Photo", "Film"), (5, 6, 7, 8), batch_size=2, batch_count=2, started=started)
    second = replace(job, index=3)  # the second picture of the second batch
    assert file_stem("[seed]-[seed_first]-[seed_last]-[batch_number]-[generation]", INFOTEXT) == "5-5-[generation]"
    assert file_stem("[seed]-[seed_first]-[seed_last]-[batch_size]", INFOTEXT, 8, naming=second) == "8-5-8-2"
    assert file_stem("[seed] [batch_number] [generation_number]", INFOTEXT, 8, naming=second) == "8 2 4"
    assert file_stem("[seed] [batch_number] [generation_number]", INFOTEXT, 5, naming=Naming()) == "5"
    assert file_stem("[styles]: [prompt_no_styles]", INFOTEXT, naming=job) == "Photo, Film_ a red circle"
    assert file_stem("[styles]", INFOTEXT) == "None"
    assert file_stem("[job_timestamp]", INFOTEXT, naming=job) == "20261123090807"
    assert file_stem("[seed]-[denoising]-[clip_skip]", INFOTEXT) == "5-1"
    assert file_stem("[denoising]", INFOTEXT + ", Denoising strength: 0.75") == "0.75"
    assert file_stem("[hasprompt<circle><square|round><RED>]", INFOTEXT) == "circleroundred"
    assert file_stem("[width]x[height] [image_hash<6>]", INFOTEXT, image=picture) == (
        "64x48 " + hashlib.sha256(picture.tobytes()).hexdigest()[:6])
    assert file_stem("[prompt_hash<3>]", INFOTEXT) == hashlib.sha256(b'a red circle, on "white": big').hexdigest()[:3]


def test_the_writer_names_pictures_by_the_pattern_and_writes_their_text_beside_them(tmp_path):
    writer = OutputWriter(tmp_path)
    writer.pattern, writer.save_txt = "[seed]-[prompt_words]", True
    path = writer.save(Image.new("RGB", (8, 8)), INFOTEXT, seed=5)
    assert path.name == "00000-5-a red circle on white big.png"
    assert path.with_suffix(".txt").read_text() == INFOTEXT
    grid = writer.save(Image.new("RGB", (8, 8)), INFOTEXT, seed=None, category="txt2img-images", basename="grid")
    assert grid.name == "grid-0000.png" and grid.parent == path.parent  # A1111's, numbered apart from the pictures
    again = writer.save(Image.new("RGB", (8, 8)), INFOTEXT, seed=5)
    assert again.name.startswith("00001-") and path.with_suffix(".txt").read_text() == INFOTEXT
    writer.add_number, writer.pattern = False, "[seed]"  # A1111's save_images_add_number off: never one over another
    assert [writer.save(Image.new("RGB", (8, 8)), INFOTEXT, seed=5).name for _ in range(3)] == [
        "5.png", "5-1.png", "5-2.png"]
    writer.pattern = "[none]"  # nothing to name it by: the number after all, as A1111's
    assert writer.save(Image.new("RGB", (8, 8)), INFOTEXT, seed=5).name == "00002.png"
    writer.add_number, writer.pattern, writer.save_to_dirs = True, "", False  # A1111's default without folders
    assert writer.save(Image.new("RGB", (8, 8)), INFOTEXT, seed=5, category="img2img-images").name == (
        "00000-5-a red circle, on _white__ big.png")


def test_directory_patterns_name_the_folders_under_each_category(tmp_path):
    """A1111's save_to_dirs and directories_filename_pattern: the date by default, any tokens, / nesting folders that
    never leave the category's; off, the category's folder itself. The Image Browser finds the pictures anywhere
    under it."""
    from pipelines.saved_images import saved_images

    writer, day = OutputWriter(tmp_path), datetime.date(2026, 11, 23)
    assert writer.save(Image.new("RGB", (8, 8)), INFOTEXT, seed=5, when=day).parent == (
        tmp_path / "txt2img-images" / "2026-11-23")
    writer.directory_pattern = "[model_name]/../[sampler]//"
    assert writer.save(Image.new("RGB", (8, 8)), INFOTEXT, seed=5).parent == (
        tmp_path / "txt2img-images" / "easel" / "Euler a")
    writer.directory_pattern = "[datetime<%Y/%m>]/[seed]"  # a "/" in a token's format is no folder of its own
    assert writer.save(Image.new("RGB", (8, 8)), INFOTEXT, seed=5, when=day).parent == (
        tmp_path / "txt2img-images" / "2026_11" / "5")
    writer.directory_pattern = ""  # A1111's [prompt_words]
    assert writer.save(Image.new("RGB", (8, 8)), INFOTEXT, seed=5).parent.name == "a red circle on white big"
    writer.save_to_dirs = False
    (tmp_path / "txt2img-images" / "x.png").mkdir()  # a folder named like a picture is not one
    assert writer.save(Image.new("RGB", (8, 8)), INFOTEXT, seed=5).parent == tmp_path / "txt2img-images"
    assert len(saved_images(tmp_path, "txt2img")) == 5


def test_the_jpeg_quality_setting_reaches_the_file(tmp_path):
    import numpy as np

    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    writer = OutputWriter(tmp_path, format="jpg")
    sizes = []
    for quality in (20, 95):
        writer.quality = quality
        sizes.append(writer.save(noise, INFOTEXT, seed=1).stat().st_size)
    assert sizes[0] < sizes[1] / 2


def test_the_api_options_change_how_pictures_are_saved_and_keep_it(models_dir, tmp_path, api_client):
    path, out = tmp_path / "config.json", tmp_path / "out"
    client, services = api_client(models_dir, outputs_dir=out, save_outputs=None, config_file=path)
    options = client.get("/sdapi/v1/options").json()
    assert (options["samples_format"], options["n_rows"], options["return_grid"], options["outdir_samples"]) == (
        "png", -1, True, "")
    changes = {"samples_format": "jpg", "samples_filename_pattern": "[seed]-[steps]", "save_txt": True, "n_rows": 1}
    assert client.post("/sdapi/v1/options", json=changes).status_code == 200
    job = {"prompt": "a cat", "steps": 1, "width": 64, "height": 64, "batch_size": 2, "seed": 7, "save_images": True}

    def run() -> int:
        response = client.post("/sdapi/v1/txt2img", json=job)
        assert response.status_code == 200, response.text
        return len(response.json()["images"])

    assert run() == 3  # the grid first, in one row
    pictures = sorted(path.name for path in (out / "txt2img-images").rglob("*.*"))
    assert pictures == ["00000-7-1.jpg", "00000-7-1.txt", "00001-8-1.jpg", "00001-8-1.txt"]
    [grid] = (out / "txt2img-grids").rglob("*.png")
    assert Image.open(grid).size == (128, 64) and grid.name == "grid-0000.png"  # A1111's grid_format is its own
    assert client.post("/sdapi/v1/options", json={"return_grid": False, "grid_save": False}).status_code == 200
    assert run() == 2 and len(list((out / "txt2img-grids").rglob("*.png"))) == 1
    response = client.post("/sdapi/v1/options", json={"samples_save": False, "live_previews_enable": False,
                                                      "use_original_name_batch": False})
    assert response.status_code == 200
    assert run() == 2 and len(list((out / "txt2img-images").rglob("*.jpg"))) == 4
    assert services.engine.preview_every == 0 and services.engine.original_names is False
    for bad in ({"jpeg_quality": 0}, {"samples_filename_pattern": "[nope]"}, {"return_grid": "yes"}):
        response = client.post("/sdapi/v1/options", json={"samples_format": "webp", **bad})
        assert response.status_code == 422 and response.json()["field"] == next(iter(bad)), response.text
    assert client.post("/sdapi/v1/options", json={"outdir_samples": "/tmp"}).status_code == 422
    # A1111's enable_pnginfo off: the API's pictures (and the saved ones) carry no parameters
    assert client.post("/sdapi/v1/options", json={"enable_pnginfo": False, "samples_save": True}).status_code == 200
    response = client.post("/sdapi/v1/txt2img", json={**job, "batch_size": 1}).json()
    picture = Image.open(io.BytesIO(base64.b64decode(response["images"][0])))
    assert "parameters" not in picture.info and json.loads(response["info"])["infotexts"][0].startswith("a cat")
    newest = max((out / "txt2img-images").rglob("*.jpg"), key=lambda file: file.stat().st_mtime_ns)
    assert read_infotext(Image.open(newest)) is None and newest.with_suffix(".txt").read_text().startswith("a cat")
    kept = json.loads(path.read_text())
    assert kept == {**changes, "return_grid": False, "grid_save": False, "samples_save": True,
                    "live_previews_enable": False, "use_original_name_batch": False, "enable_pnginfo": False}


def test_the_grid_settings_and_the_jobs_tokens_name_and_place_what_is_saved(models_dir, tmp_path, api_client):
    """A1111's grid_format, grid_extended_filename, grid_save_to_dirs, grid_only_if_multiple and
    save_images_add_number, and a job's tokens in its pictures' names (a grid has no batch number)."""
    out = tmp_path / "out"
    client, _ = api_client(models_dir, outputs_dir=out, save_outputs=None, config_file=tmp_path / "config.json")
    changes = {"grid_format": "webp", "grid_extended_filename": True, "grid_save_to_dirs": False,
               "save_to_dirs": False, "samples_filename_pattern": "[seed]-[batch_number]-[generation_number]"}
    assert client.post("/sdapi/v1/options", json=changes).status_code == 200
    job = {"prompt": "a cat", "steps": 1, "width": 64, "height": 64, "batch_size": 2, "n_iter": 2, "seed": 7,
           "save_images": True}

    def run(**changed) -> int:
        response = client.post("/sdapi/v1/txt2img", json={**job, **changed})
        assert response.status_code == 200, response.text
        return len(response.json()["images"])

    assert run() == 5
    assert sorted(path.name for path in (out / "txt2img-images").iterdir()) == [
        "00000-7-1-1.png", "00001-8-2-2.png", "00002-9-1-3.png", "00003-10-2-4.png"]
    assert [path.name for path in (out / "txt2img-grids").iterdir()] == ["grid-0000-7.webp"]
    changes = {"grid_only_if_multiple": False, "save_images_add_number": False, "samples_filename_pattern": "[seed]"}
    assert client.post("/sdapi/v1/options", json=changes).status_code == 200
    assert run(batch_size=1, n_iter=1) == 2 and run(batch_size=1, n_iter=1) == 2  # a grid of the one picture
    assert {"7.png", "7-1.png"} < {path.name for path in (out / "txt2img-images").iterdir()}
    assert sorted(path.name for path in (out / "txt2img-grids").iterdir()) == [
        "7-1.webp", "7.webp", "grid-0000-7.webp"]  # named as A1111 names them: without the number, no "grid"


def test_the_tabs_defaults_are_kept_under_a1111s_keys(tmp_path, caplog):
    """A1111's ui-config.json: saved values differ from Easel's own, values a field cannot take are passed over,
    keys Easel does not know stay."""
    import gradio as gr

    from ui.common import FieldSet
    from ui.defaults import UiDefaults

    path = tmp_path / "ui-config.json"
    path.write_text(json.dumps({"txt2img/Sampling steps/value": 7, "txt2img/Sampling method/value": "Heun",
                                "txt2img/Width/value": 99999, "txt2img/Seed/value": "x", "img2img/Other/value": 1}))
    with gr.Blocks():
        fields = FieldSet("txt2img")
        fields.add("prompt", gr.Textbox("", label="Prompt (0/75)"))
        fields.add("steps", gr.Slider(1, 150, value=20, label="Sampling steps"))
        fields.add("sampler", gr.Dropdown(["Euler a", "Heun"], value="Euler a", label="Sampling method"))
        fields.add("width", gr.Slider(64, 2048, value=512, label="Width"))
        fields.add("seed", gr.Number(-1, label="Seed"))
        fields.add("clip_skip", gr.Slider(1, 12, value=1, label="Clip skip"))
        fields.add("image", gr.Image(label="Image"))
        defaults = UiDefaults(path, [SimpleNamespace(fields=fields)], {"clip_skip"})
        defaults.apply()
    assert list(defaults.fields) == ["txt2img/Prompt/value", "txt2img/Sampling steps/value",
                                     "txt2img/Sampling method/value", "txt2img/Width/value", "txt2img/Seed/value"]
    values = {name: component.value for name, component in fields.components.items()}
    assert (values["steps"], values["sampler"], values["width"], values["seed"]) == (7, "Heun", 512, -1)
    assert "txt2img/Width/value cannot be 99999" in caplog.text and "txt2img/Seed/value cannot be 'x'" in caplog.text
    assert defaults.save(["a cat", 20, "Heun", 512, 5]) == [
        "txt2img/Prompt/value", "txt2img/Sampling steps/value", "txt2img/Width/value", "txt2img/Seed/value"]
    assert json.loads(path.read_text()) == {"txt2img/Sampling method/value": "Heun", "img2img/Other/value": 1,
                                            "txt2img/Prompt/value": "a cat", "txt2img/Seed/value": 5}
    assert defaults.save(["a cat", 20, "Heun", 512, 5]) == []


def test_the_next_start_opens_on_the_checkpoint_picked_last(models_dir, tmp_path, api_client, caplog):
    """A1111 keeps ``sd_model_checkpoint`` in config.json: set through the API (or the model picker), the next start
    opens on it unless --default-model names one; a kept name no longer on disk is a warning."""
    from pipelines.services import Services, Settings

    path = tmp_path / "config.json"
    client, _ = api_client(models_dir, config_file=path)
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sdxl"}).status_code == 200
    assert json.loads(path.read_text()) == {"sd_model_checkpoint": "tiny-sdxl"}

    def start(**settings) -> str:
        return Services.build(Settings(models_dir=models_dir, device="cpu", config_file=path,
                                       **settings)).registry.default_name()

    assert start() == "tiny-sdxl"
    assert start(default_model="tiny-sd") == "tiny-sd"
    path.write_text(json.dumps({"sd_model_checkpoint": "gone [0123456789]"}))
    assert start() != "gone" and "'gone [0123456789]', is not among the models" in caplog.text
