"""Browser tests of the Networks panel and the SD VAE picker: in headless Chromium, search for a LoRA card, click
it, see its tag land in the prompt, generate, and find the LoRA's hash in the infotext; pick a VAE and find it in
the infotext. The app runs on its own models folder (tiny-sd and a LoRA with a preview picture, an embedding and
a hypernetwork file for their cards, and another tiny VAE in models/VAE)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from browser_support import (ARTIFACTS, GENERATION_TIMEOUT_MS, gallery_png, generate_in, open_page, pick, set_number,
                             set_text)
from network_support import kohya_lora, lycoris_from_lora
from playwright.sync_api import expect


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, serve_app):
    import torch
    from safetensors.torch import save_file

    from training.tiny_random import build_tiny_sd, save_tiny_models

    root = tmp_path_factory.mktemp("browser-net-models")
    save_tiny_models(root)
    (root / "Lora").mkdir()
    (root / "hypernetworks").mkdir()
    (root / "embeddings").mkdir()
    g = torch.Generator().manual_seed(0)
    weights = {}
    for name, module in build_tiny_sd().unet.named_modules():
        if name.endswith(("to_k", "to_v")):
            weights[f"unet.{name}.lora_A.weight"] = torch.randn(2, module.in_features, generator=g)
            weights[f"unet.{name}.lora_B.weight"] = torch.randn(module.out_features, 2, generator=g)
    save_file(weights, root / "Lora" / "stripes.safetensors")
    save_file(lycoris_from_lora(kohya_lora(build_tiny_sd(), 1), "LoHa"), root / "Lora" / "weave.safetensors")
    Image.new("RGB", (64, 64), (200, 40, 160)).save(root / "Lora" / "stripes.preview.png")
    (root / "Lora" / "stripes.json").write_text('{"description": "Stripes for tests", "sd version": "SD1"}')
    save_file({"emb_params": torch.zeros(3, 8)}, root / "embeddings" / "shiny.safetensors")  # three vectors
    torch.save({8: ({}, {})}, root / "hypernetworks" / "grain.pt")
    build_tiny_sd(seed=7).vae.save_pretrained(root / "VAE" / "other")
    with serve_app(root) as url:
        yield url


@pytest.fixture(scope="module")
def page(app_url):
    with open_page(app_url) as page:
        yield page


def test_click_a_lora_card_then_generate(page):
    prompt = page.locator("#txt2img_prompt textarea")
    prompt.fill("a red circle")
    page.locator("#txt2img_networks").get_by_text("Networks").first.click()
    cards = page.locator("#txt2img_networks_cards")
    for caption in ("stripes · LoRA · context 8", "shiny · Embedding · context 8", "grain · Hypernetwork",
                    "weave · LoRA · context 8 LoHa"):
        expect(cards).to_contain_text(caption)
    page.locator("#txt2img_networks_search input, #txt2img_networks_search textarea").first.fill("lora")
    expect(cards).not_to_contain_text("shiny")
    expect(cards.locator("img")).to_have_count(2)
    cards.locator("img").first.evaluate("e => e.complete || new Promise(done => e.addEventListener('load', done))")
    page.screenshot(path=str(ARTIFACTS / "networks-cards.png"), full_page=True, animations="disabled")

    cards.locator("img").first.click()
    expect(prompt).to_have_value("a red circle <lora:stripes:1>")

    info = page.locator("#txt2img_info textarea")
    page.locator("#txt2img_generate").click()
    expect(info).to_have_value(re.compile("Lora hashes"), timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#txt2img_gallery img").first).to_be_visible()
    text = info.input_value()
    assert text.startswith("a red circle <lora:stripes:1>\n") and 'Lora hashes: "stripes: ' in text, text
    page.screenshot(path=str(ARTIFACTS / "networks-generated.png"), full_page=True, animations="disabled")


def test_a_loha_card_then_generate(page):
    """A LyCORIS file is a LoRA card too, its algorithm in its caption; its tag applies it."""
    prompt = page.locator("#txt2img_prompt textarea")
    prompt.fill("a red circle")
    cards = page.locator("#txt2img_networks_cards")
    if not cards.is_visible():
        page.locator("#txt2img_networks").get_by_text("Networks").first.click()
    page.locator("#txt2img_networks_search input, #txt2img_networks_search textarea").first.fill("loha")
    expect(cards.locator("img")).to_have_count(1)
    cards.locator("img").first.click()
    expect(prompt).to_have_value("a red circle <lora:weave:1>")
    text = generate_in(page, "txt2img")
    assert 'Lora hashes: "weave: ' in text, text
    expect(page.locator(".toast-body").filter(has_text="weave")).to_have_count(0)  # no file left out
    page.screenshot(path=str(ARTIFACTS / "networks-loha.png"), full_page=True, animations="disabled")


def test_the_token_counter_counts_an_embedding_as_its_vectors(page):
    """A1111's counter: "shiny" is one token of text, and three vectors of its embedding, which it counts."""
    page.locator("#txt2img_prompt textarea").fill("a red circle shiny")
    expect(page.locator("#txt2img_prompt")).to_contain_text("Prompt (6/75)")
    page.locator("#txt2img_prompt textarea").fill("a red circle shinier")
    expect(page.locator("#txt2img_prompt")).to_contain_text("Prompt (5/75)")  # two tokens of text, no embedding


def test_pick_a_vae_for_every_model(page):
    box = page.locator("#vae_select input")
    expect(box).to_have_value("Automatic")
    page.locator("#txt2img_prompt textarea").fill("a red circle")
    try:
        box.click()
        page.get_by_role("option", name="other").click()
        expect(box).to_have_value("other")
        infotext = generate_in(page, "txt2img")
        assert "VAE: other," in infotext, infotext
        page.screenshot(path=str(ARTIFACTS / "vae.png"), full_page=True, animations="disabled")
    finally:
        box.click()
        page.get_by_role("option", name="Automatic").click()
    expect(box).to_have_value("Automatic")
    assert "VAE:" not in generate_in(page, "txt2img")


def test_a_cards_metadata_edited_then_added_with_the_card(page):
    """A1111's card editor: the LoRA's activation text, preferred weight and negative text, saved beside it, are
    what its card adds to the prompts; picked again, they are shown."""
    prompt, negative = page.locator("#txt2img_prompt textarea"), page.locator("#txt2img_neg_prompt textarea")
    cards = page.locator("#txt2img_networks_cards")
    if not cards.is_visible():
        page.locator("#txt2img_networks").get_by_text("Networks").first.click()
    page.locator("#txt2img_networks_editor").get_by_text("Edit a network's metadata").click()
    pick(page, "txt2img_network_picked", "stripes (LoRA)")
    description = page.locator("#txt2img_network_description textarea")
    expect(description).to_have_value("Stripes for tests")  # A1111's name.json read: the boxes are filled
    activation = page.locator("#txt2img_network_activation").locator("textarea, input").first
    expect(activation).to_have_value("")
    set_text(page, "txt2img_network_activation", "striped")  # kept, should the picked card's values arrive late
    set_text(page, "txt2img_network_negative", "blurry")
    set_number(page, "txt2img_network_weight", 0.6)
    page.locator("#txt2img_network_save").click()
    expect(page.get_by_role("status").filter(has_text="Saved stripes.json")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "networks-editor.png"), full_page=True, animations="disabled")

    prompt.fill("a red circle")
    negative.fill("")
    page.locator("#txt2img_networks_search input, #txt2img_networks_search textarea").first.fill("stripes")
    expect(cards.locator("img")).to_have_count(1)
    cards.locator("img").first.click()
    expect(prompt).to_have_value("a red circle <lora:stripes:0.6> striped")
    expect(negative).to_have_value("blurry")
    negative.fill("")

    pick(page, "txt2img_network_picked", "shiny (Embedding)")
    expect(description).to_have_value("")
    expect(activation).to_have_value("")
    pick(page, "txt2img_network_picked", "stripes (LoRA)")
    expect(description).to_have_value("Stripes for tests")
    expect(activation).to_have_value("striped")
    expect(page.locator("#txt2img_network_weight input[type=number]")).to_have_value("0.6")


def test_lora_block_weight_presets_edited_then_used_in_a_tag(page, tmp_path):
    """The presets panel shows the extension's presets; a line that is no preset is refused by its number; a preset
    saved there works in a tag: every block at 0 gives the picture without the LoRA."""
    if not page.locator("#txt2img_networks_cards").is_visible():
        page.locator("#txt2img_networks").get_by_text("Networks").first.click()
    page.locator("#txt2img_lbw").get_by_text("LoRA Block Weight presets").click()
    box = page.locator("#txt2img_lbw_presets textarea")
    expect(box).to_have_value(re.compile(r"^NONE:0(,0){16}\n.*\nOUTD:1,0,0,0,0,0,0,0,1,1,1,1(,0){5}\n", re.S))
    original = box.input_value()
    set_text(page, "txt2img_lbw_presets", original + "BAD:1,0\n")
    page.locator("#txt2img_lbw_save").click()
    expect(page.locator(".toast-body").filter(has_text="Line 11 (BAD): 2 weights")).to_be_visible()
    set_text(page, "txt2img_lbw_presets", original + "NOWEAVE:" + ",".join(["0"] * 26) + "\n")
    page.locator("#txt2img_lbw_save").click()
    expect(page.get_by_role("status").filter(has_text="Saved 11 presets to lbwpresets.txt")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "networks-lbw-presets.png"), full_page=True, animations="disabled")

    set_number(page, "txt2img_seed", 5)
    page.locator("#txt2img_prompt textarea").fill("a red circle")
    generate_in(page, "txt2img")
    plain = gallery_png(page, "txt2img", tmp_path / "plain.png")
    page.locator("#txt2img_prompt textarea").fill("a red circle <lora:weave:1:lbw=NOWEAVE>")
    text = generate_in(page, "txt2img")
    assert text.startswith("a red circle <lora:weave:1:lbw=NOWEAVE>\n") and 'Lora hashes: "weave: ' in text, text
    expect(page.locator(".toast-body").filter(has_text="weave")).to_have_count(0)  # no warning: the preset is known
    assert np.array_equal(np.asarray(Image.open(gallery_png(page, "txt2img", tmp_path / "lbw.png"))),
                          np.asarray(Image.open(plain)))
