"""LoRA through the engine on the tiny models: files built here in kohya's and diffusers' formats; weight 0 is
no LoRA, weight 1 changes the picture, switching leaves no residue, bad files are refused by name, and the share
of an SDXL LoRA that applies to a KOALA-like UNet (no mid block) is reported."""

import json
import logging
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from network_support import diffusers_lora, engine_for, kohya_lora, run
from pipelines.hashing import network_hash

@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A models folder with tiny-sd, tiny-sdxl and a KOALA-like tiny-koala (tiny-sdxl without its mid block),
    and LoRA files for them."""
    from diffusers import UNet2DConditionModel

    from training.tiny_random import build_tiny_sd, build_tiny_sdxl, save_tiny_models

    root = tmp_path_factory.mktemp("net-models")
    save_tiny_models(root)
    koala = build_tiny_sdxl()
    koala.unet = UNet2DConditionModel.from_config(koala.unet.config, mid_block_type=None)
    koala.save_pretrained(root / "Stable-diffusion" / "tiny-koala")
    loras = root / "Lora"
    (loras / "styles").mkdir(parents=True)
    sd, sdxl = build_tiny_sd(), build_tiny_sdxl()
    save_file(kohya_lora(sd, 1), loras / "kohya.safetensors", metadata={"ss_output_name": "kohya"})
    save_file(diffusers_lora(sd, 1), loras / "styles" / "peft-same.safetensors")  # the same weights, other names
    save_file(kohya_lora(sd, 2), loras / "other.safetensors")
    save_file(kohya_lora(sd, 5), loras / "b.safetensors")  # a name inside every UNet key ("down_blocks")
    torch.save(kohya_lora(sd, 3), loras / "pickled.pt")
    save_file(kohya_lora(sdxl, 4), loras / "xl.safetensors")
    (loras / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    save_file({"some.weight": torch.zeros(2, 2)}, loras / "unknown.safetensors")
    with open(loras / "evil.pt", "wb") as fh:
        pickle.dump(_Evil(), fh)
    return root


class _Evil:
    def __reduce__(self):
        import os

        return os.system, ("echo pwned",)


@pytest.fixture(scope="module")
def engine(folders, tmp_path_factory):
    return engine_for(folders, tmp_path_factory.mktemp("out"))


@pytest.fixture(scope="module")
def plain(folders, tmp_path_factory):
    """The picture of a model that never had a LoRA."""
    return run(engine_for(folders, tmp_path_factory.mktemp("fresh")), "a red circle")[0]


def test_weight_zero_is_no_lora_and_weight_one_changes_the_picture(engine, plain):
    zero, result = run(engine, "a red circle <lora:kohya:0>")
    assert np.array_equal(zero, plain) and result.warnings == []
    one, _ = run(engine, "a red circle <lora:kohya:1>")
    assert np.abs(one - plain).mean() > 1


def test_kohya_and_diffusers_formats_of_the_same_weights_give_the_same_picture(engine, plain):
    kohya, _ = run(engine, "a red circle <lora:kohya:0.8>")
    peft, result = run(engine, "a red circle <lora:peft-same:0.8>")  # found in a subfolder, by name
    assert result.warnings == []
    assert np.abs(kohya - peft).max() <= 1 and not np.array_equal(kohya, plain)


def test_pickled_pt_lora_loads_through_safe_loading(engine, plain):
    picture, result = run(engine, "a red circle <lora:pickled:1>")
    assert result.warnings == [] and not np.array_equal(picture, plain)


def test_text_encoder_and_unet_weights_act_separately(engine, plain):
    both, _ = run(engine, "a red circle <lora:kohya:1>")
    text_only, _ = run(engine, "a red circle <lora:kohya:1:0>")
    unet_only, _ = run(engine, "a red circle <lora:kohya:0:1>")
    assert len({plain.tobytes(), both.tobytes(), text_only.tobytes(), unet_only.tobytes()}) == 4


def test_two_loras_at_once(engine):
    one, _ = run(engine, "a red circle <lora:kohya:1>")
    two, _ = run(engine, "a red circle <lora:kohya:1> <lora:other:1>")
    assert np.abs(two - one).mean() > 1


def test_a_lora_named_inside_the_keys_loads_beside_another_without_false_missing_keys(engine, caplog):
    """diffusers' own check of missing keys matches adapter names as substrings: "b" found kohya's keys."""
    diffusers_logger = logging.getLogger("diffusers")  # it does not propagate to the root, where caplog listens
    diffusers_logger.addHandler(caplog.handler)
    try:
        run(engine, "a red circle <lora:kohya:1> <lora:b:1>")
    finally:
        diffusers_logger.removeHandler(caplog.handler)
    assert "missing keys" not in caplog.text


def test_switching_loras_leaves_no_residue(engine, plain):
    run(engine, "a red circle <lora:kohya:1>")
    run(engine, "a red circle <lora:other:0.5:1.5>")
    after, result = run(engine, "a red circle")
    assert np.array_equal(after, plain) and result.warnings == []


def test_lora_hashes_are_in_the_infotext_and_the_tags_stay_in_the_prompt(engine, folders):
    _, result = run(engine, "a red circle <lora:kohya:0.7> <lora:other:1>")
    text = result.infotexts[0]
    assert text.startswith("a red circle <lora:kohya:0.7> <lora:other:1>\n")
    hashes = f'kohya: {network_hash(folders / "Lora" / "kohya.safetensors")}, ' \
             f'other: {network_hash(folders / "Lora" / "other.safetensors")}'
    assert f'Lora hashes: "{hashes}", Version: ' in text
    assert len(hashes.split(", ")[0].split(": ")[1]) == 12


def test_safetensors_hash_skips_the_header(tmp_path):
    """A1111's LoRA hash (civitai's AutoV3) covers the tensors only: new metadata keeps it."""
    tensors = {"a.lora_down.weight": torch.ones(2, 2)}
    save_file(tensors, tmp_path / "a.safetensors", metadata={"v": "1"})
    save_file(tensors, tmp_path / "b.safetensors", metadata={"v": "a longer note"})
    assert network_hash(tmp_path / "a.safetensors") == network_hash(tmp_path / "b.safetensors")


@pytest.mark.parametrize("name, message", [
    ("evil", "pickle that would run code"),
    ("corrupt", "not a readable safetensors file|cannot be read"),
    ("unknown", "holds no LoRA layers"),
    ("xl", "is a context 16 LoRA; this model is context 8"),
    ("missing", "not found in"),
])
def test_bad_files_are_refused_by_name_and_the_generation_goes_on(engine, plain, name, message, capfd):
    picture, result = run(engine, f"a red circle <lora:{name}:1>")
    assert np.array_equal(picture, plain)
    assert len(result.warnings) == 1 and f"'{name}'" in result.warnings[0]
    assert any(part in result.warnings[0] for part in message.split("|")), result.warnings
    assert "pwned" not in capfd.readouterr().out
    assert "Lora hashes" not in result.infotexts[0]


def test_sdxl_lora_on_a_koala_unet_reports_the_share_that_applied(engine):
    full, _ = run(engine, "a red circle", model="tiny-koala")
    partial, result = run(engine, "a red circle <lora:xl:1>", model="tiny-koala")
    assert not np.array_equal(full, partial)
    (warning,) = result.warnings
    # 48 layers: 8 in each of tiny-sdxl's 4 transformer blocks, 8 in each text encoder; the mid block's 8 are gone
    assert "LoRA 'xl'" in warning and "applied to 83% of its layers" in warning, warning
    run(engine, "a red circle <lora:xl:1>", model="tiny-sdxl")
    assert run(engine, "a red circle <lora:xl:1>", model="tiny-sdxl")[1].warnings == []


def test_a_refiner_runs_with_the_prompts_lora_too(engine):
    """As A1111 applies networks to whichever model runs: the refiner's UNet has the LoRA on while it samples."""
    from pipelines.text_encoding import _adapter_state

    seen = []
    with engine.registry.lease("tiny-koala") as refiner:
        hook = refiner.pipe.unet.register_forward_pre_hook(lambda module, args: seen.append(_adapter_state(module)))
    try:
        for prompt in ("a red circle <lora:xl:0.5>", "a red circle"):
            run(engine, prompt, model="tiny-sdxl", refiner_checkpoint="tiny-koala", refiner_switch_at=0.5)
    finally:
        hook.remove()
    assert seen == [{("xl", 0.5)}, frozenset()]  # its one step of 3 in each run


@pytest.mark.parametrize("tag", ["<lora:kohya:lots>", "<lora:kohya:nan>", "<lora:kohya:1:inf>", "<hypernet:x:-inf>"])
def test_a_bad_weight_is_a_request_error(engine, tag):
    from pipelines.errors import RequestError

    with pytest.raises(RequestError, match=f"{tag}: the weight is not a number"):
        run(engine, f"a red circle {tag}")


def test_networks_are_listed_with_family_and_metadata(engine):
    from pipelines.networks import describe, metadata

    loras = {item.name: item for item in engine.networks.files("lora")}
    assert {"kohya", "peft-same", "other", "pickled", "xl", "corrupt", "unknown", "evil"} <= set(loras)
    assert describe(loras["kohya"]) == "context 8" and describe(loras["xl"]) == "context 16"
    assert describe(loras["corrupt"]) == "unreadable" and describe(loras["evil"]) == "unreadable"
    assert metadata(loras["kohya"]) == {"ss_output_name": "kohya"}


def test_rest_lists_loras_and_hypernetworks_and_ui_cards_insert_tags(folders, api_client):
    from ui.networks import cards, insert

    (folders / "hypernetworks").mkdir(exist_ok=True)
    torch.save({8: ({}, {})}, folders / "hypernetworks" / "grain.pt")
    client, services = api_client(folders)
    loras = {entry["name"]: entry for entry in client.get("/sdapi/v1/loras").json()}
    assert loras["kohya"] == {"name": "kohya", "alias": "kohya", "path": str(folders / "Lora" / "kohya.safetensors"),
                              "metadata": {"ss_output_name": "kohya"}}
    assert loras["peft-same"]["path"].endswith("styles/peft-same.safetensors")
    assert client.post("/sdapi/v1/refresh-loras").status_code == 200
    assert client.get("/sdapi/v1/hypernetworks").json() == [
        {"name": "grain", "path": str(folders / "hypernetworks" / "grain.pt")}]

    found = {item.name: caption for item, caption in cards(services, "context 8")}
    assert found["kohya"] == "kohya · LoRA · context 8" and "xl" not in found
    assert insert("a cat", "<lora:kohya:1>") == "a cat <lora:kohya:1>"
    assert insert("a cat <lora:kohya:1>", "<lora:kohya:1>") == "a cat <lora:kohya:1>"
    assert insert("", "shiny") == "shiny"


def test_a_cards_user_metadata_shapes_what_it_adds(tmp_path):
    """A1111's ``name.json`` beside a network: the preferred weight goes into the tag, the activation text after it,
    the negative text into the negative prompt; saving keeps the keys it does not change; a broken file is none."""
    from pipelines.networks import NetworkFile
    from ui.networks import additions, insert

    item = NetworkFile("lora", "ink", tmp_path / "ink.safetensors")
    assert item.user_metadata() == {} and additions(item) == (["<lora:ink:1>", ""], [""])
    assert additions(item, 0.6)[0][0] == "<lora:ink:0.6>"  # A1111's extra_networks_default_multiplier
    item.metadata_path.write_text('{"sd version": "SD1", "preferred weight": 0.7, "activation text": "ink style"}')
    item.save_user_metadata({"negative text": "blurry", "notes": "from a test"})
    assert json.loads(item.metadata_path.read_text()) == {"sd version": "SD1", "preferred weight": 0.7,
                                                          "activation text": "ink style", "negative text": "blurry",
                                                          "notes": "from a test"}
    assert additions(item) == additions(item, 0.6) == (["<lora:ink:0.7>", "ink style"], ["blurry"])
    assert insert("a cat", *additions(item)[0]) == "a cat <lora:ink:0.7> ink style"
    assert insert("a cat, ink style <lora:ink:0.7>", *additions(item)[0]) == "a cat, ink style <lora:ink:0.7>"
    assert insert("inky styles", "ink style") == "inky styles ink style"  # a whole phrase, not a part of one
    assert additions(NetworkFile("hypernet", "grain", tmp_path / "grain.pt"))[0][0] == "<hypernet:grain:1>"
    item.metadata_path.write_text("{not json")
    assert item.user_metadata() == {} and additions(item)[0][0] == "<lora:ink:1>"
    assert [p.name for p in tmp_path.iterdir()] == ["ink.json"]  # no temporary file left behind
