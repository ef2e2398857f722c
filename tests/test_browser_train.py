"""The Train tab in a browser, on a models folder of its own: create an embedding, train it a few steps on a folder
of pictures with previews as they come, ask for more training than Max steps allows, then interrupt a long run; create
a hypernetwork and train it on the same fields, with A1111's Training settings changed in the Settings tab."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from browser_support import ARTIFACTS, GENERATION_TIMEOUT_MS, open_page, open_tab, set_numbers, set_text
from playwright.sync_api import expect


@pytest.fixture(scope="module")
def served(tmp_path_factory, serve_app):
    from training.tiny_random import build_tiny_sd

    root = tmp_path_factory.mktemp("train-models")
    build_tiny_sd().save_pretrained(root / "Stable-diffusion" / "tiny-sd")
    data = tmp_path_factory.mktemp("train-data")
    for index, colour in enumerate(("red", "blue", "green")):
        Image.new("RGB", (64, 64), colour).save(data / f"{index:05d}-a {colour} field.png")
    outputs = tmp_path_factory.mktemp("train-outputs")
    with serve_app(root, outputs=outputs) as url, open_page(url) as page:
        yield page, root, data, outputs


def test_create_then_train_an_embedding_with_previews(served):
    page, root, data, outputs = served
    open_tab(page, "Train", "train")
    open_tab(page, "Create embedding")
    set_text(page, "train_embedding_name", "mine")
    set_text(page, "train_initialization_text", "red field")
    set_numbers(page, {"train_nvpt": 2})
    page.locator("#train_create_embedding").click()
    expect(page.locator("#train_create_result textarea")).to_have_value(re.compile(r"Created: .*embeddings/mine\.pt"),
                                                                        timeout=GENERATION_TIMEOUT_MS)
    assert (root / "embeddings" / "mine.pt").is_file()

    open_tab(page, "Train", "train_train")  # the created embedding is picked there already
    expect(page.locator("#train_embedding input")).to_have_value("mine")
    set_text(page, "train_dataset_directory", str(data))
    set_numbers(page, {"train_training_width": 64, "train_training_height": 64, "train_steps": 4, "train_seed": 1,
                       "train_create_image_every": 2, "train_save_embedding_every": 2})
    page.locator("#train_train_embedding").click()
    progress = page.locator("#train_progress textarea")
    expect(progress).to_have_value(re.compile(r"^Training finished at 4 steps, loss \d"), timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#train_preview img")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "train.png"), full_page=True, animations="disabled")
    (log,) = (outputs / "textual_inversion").glob("*/mine")
    assert sorted(p.name for p in (log / "images").iterdir()) == ["mine-2.png", "mine-4.png"]
    assert sorted(p.name for p in (log / "embeddings").iterdir()) == ["mine-2.pt", "mine-4.pt"]

    page.locator("#train_train_embedding").click()  # trained to step 4 already: Max steps must go up
    toast = page.get_by_role("status").filter(has_text="trained to step 4 already")
    expect(toast).to_be_visible(timeout=GENERATION_TIMEOUT_MS)
    toast.get_by_role("button", name="Close", exact=True).click()

    set_numbers(page, {"train_steps": 100000, "train_create_image_every": 0, "train_save_embedding_every": 0})
    page.locator("#train_train_embedding").click()
    expect(progress).to_have_value(re.compile(r"^Step \d+ of 100000: loss"), timeout=GENERATION_TIMEOUT_MS)
    page.locator("#train_interrupt").click()
    expect(progress).to_have_value(re.compile(r"^Training interrupted at \d+ steps"), timeout=GENERATION_TIMEOUT_MS)


def test_create_then_train_a_hypernetwork(served):
    """Modules offers A1111's widths and the checkpoint's own (tiny-sd: 8 for its text, 16 for its attention),
    ticked; the hypernetwork trains on the Train sub-tab's shared fields at its own learning rate."""
    page, root, data, outputs = served
    open_tab(page, "Train", "train")
    open_tab(page, "Create hypernetwork")
    modules = page.locator("#train_new_hypernetwork_sizes")
    for width in ("768", "1024", "320", "640", "1280", "8", "16"):
        expect(modules.get_by_label(width, exact=True)).to_be_visible()
    for width in ("8", "16", "768"):
        expect(modules.get_by_label(width, exact=True)).to_be_checked()
    expect(modules.get_by_label("1024", exact=True)).not_to_be_checked()
    set_text(page, "train_new_hypernetwork_name", "style")
    set_text(page, "train_new_hypernetwork_layer_structure", "1, 1.5, 1")
    page.locator("#train_create_hypernetwork").click()
    expect(page.locator("#train_create_hypernetwork_result textarea")).to_have_value(
        re.compile(r"Created: .*hypernetworks/style\.pt"), timeout=GENERATION_TIMEOUT_MS)
    page.screenshot(path=str(ARTIFACTS / "train_hypernetwork_create.png"), full_page=True, animations="disabled")

    open_tab(page, "Settings")  # A1111's Training settings: the loss at every step, no settings file, the .optim
    open_tab(page, "Training")
    set_numbers(page, {"setting_training_write_csv_every": 1})
    page.locator("#setting_save_training_settings_to_txt input[type=checkbox]").uncheck()
    page.locator("#setting_save_optimizer_state input[type=checkbox]").check()
    page.locator("#settings_submit").click()
    expect(page.locator("#settings_result")).to_contain_text(
        "3 settings changed: training_write_csv_every, save_training_settings_to_txt, save_optimizer_state.")
    page.screenshot(path=str(ARTIFACTS / "settings_training.png"), full_page=True, animations="disabled")

    open_tab(page, "txt2img")  # the previews' parameters (A1111's Read parameters from txt2img)
    set_text(page, "txt2img_prompt", "a style square")
    set_numbers(page, {"txt2img_steps": 3, "txt2img_width": 64, "txt2img_height": 64, "txt2img_seed": 7})
    open_tab(page, "Train", "train")
    open_tab(page, "Train", "train_train")
    expect(page.locator("#train_hypernetwork input")).to_have_value("style")
    page.locator("#train_preview_from_txt2img input[type=checkbox]").check()
    page.locator("#train_use_weight input[type=checkbox]").check()
    set_text(page, "train_dataset_directory", str(data))
    set_text(page, "train_hypernetwork_learn_rate", "0.001")
    set_numbers(page, {"train_training_width": 64, "train_training_height": 64, "train_steps": 2, "train_seed": 1,
                       "train_create_image_every": 2, "train_save_embedding_every": 2})
    page.locator("#train_train_hypernetwork").click()
    progress = page.locator("#train_progress textarea")
    expect(progress).to_have_value(re.compile(r"^Training finished at 2 steps, loss \d.*Hypernetwork saved to .*"
                                              r"style\.pt"), timeout=GENERATION_TIMEOUT_MS)
    page.screenshot(path=str(ARTIFACTS / "train_hypernetwork.png"), full_page=True, animations="disabled")
    (log,) = (outputs / "textual_inversion").glob("*/style")
    assert [p.name for p in (log / "hypernetworks").iterdir()] == ["style-2.pt"]
    assert [p.name for p in (log / "images").iterdir()] == ["style-2.png"]
    with Image.open(log / "images" / "style-2.png") as picture:
        parameters = picture.info["parameters"]
    assert parameters.startswith("a style square <hypernet:style:1>\nSteps: 3,") and "Seed: 7," in parameters
    assert (log / "hypernetwork_loss.csv").read_text().count("\n") == 3  # the header and steps 1 and 2
    assert not any(log.glob("settings-*.json"))
    assert (root / "hypernetworks" / "style.pt.optim").is_file()  # A1111's save_optimizer_state

    open_tab(page, "Create hypernetwork", "train_create_hypernetwork_tab")  # a taken name is refused, not replaced
    page.locator("#train_create_hypernetwork").click()
    expect(page.get_by_role("status").filter(has_text="A hypernetwork named 'style' exists")).to_be_visible(
        timeout=GENERATION_TIMEOUT_MS)
