"""LoRA Block Weight: the extension's block numbers on the real UNets, its lists and presets, and a LoRA's
weights per block through the engine on tiny-sd (pictures equal to those of files holding only those layers) and on
the embedded model (its outline style lives in the up blocks)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from network_support import engine_for, kohya_lora, lycoris_from_lora, run
from pipelines.networks import block_weights
from pipelines.networks.block_weights import IDS, PRESETS

ROOT = Path(__file__).resolve().parent.parent


def _unet(name: str):
    from diffusers import UNet2DConditionModel

    config = json.loads((ROOT / "benchmarks" / "architectures.json").read_text())["unet"][name]["config"]
    with torch.device("meta"):
        return UNet2DConditionModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})


def _blocks(unet, *, attention: bool = False) -> set[str]:
    found = {block_weights.block(unet, name) for name, _ in unet.named_modules()
             if name and (".attentions." in name or not attention)}
    return {IDS[place] for place in found if place is not None}


def test_the_blocks_holding_attention_are_the_extensions_lists_on_sd15_and_sdxl():
    sd15, sdxl = _unet("sd15"), _unet("sdxl")
    assert _blocks(sd15) == set(IDS[1:])  # every block but BASE
    assert _blocks(sd15, attention=True) == set(block_weights.LISTS[17][1:])
    assert _blocks(sdxl, attention=True) == set(block_weights.LISTS[12][1:])
    assert _blocks(sdxl) == set(block_weights.LISTS[20][1:])
    # KOALA keeps SDXL's names for the layers it keeps, and so SDXL's blocks
    assert _blocks(_unet("koala_700m"), attention=True) < set(block_weights.LISTS[12])
    assert block_weights.block(sd15, "time_embedding.linear_1") is None
    assert IDS[block_weights.block(sd15, "up_blocks.1.upsamplers.0.conv")] == "OUT05"
    assert IDS[block_weights.block(sd15, "down_blocks.2.downsamplers.0.conv")] == "IN09"


def test_lists_and_presets_become_26_weights():
    outd = dict(zip(IDS, block_weights.weights("OUTD", PRESETS)))
    assert [block for block, weight in outd.items() if weight] == ["BASE", "OUT03", "OUT04", "OUT05", "OUT06"]
    xl = dict(zip(IDS, block_weights.weights(",".join(str(i) for i in range(12)), PRESETS)))
    assert (xl["BASE"], xl["IN04"], xl["M00"], xl["OUT05"], xl["IN00"], xl["OUT06"]) == (0, 1, 5, 11, 0, 0)
    assert block_weights.weights(",".join(["0.5"] * 26), {}) == (0.5,) * 26
    for spec, message in (("OUTX", "not a preset"), ("1,0,1", "3 weights"), ("R" + ",1" * 16, "'R' is not a number")):
        with pytest.raises(ValueError, match=message):
            block_weights.weights(spec, PRESETS)


def test_presets_file_adds_and_redefines_and_saving_refuses_a_bad_line(tmp_path):
    (tmp_path / "lbwpresets.txt").write_text("# mine\nMINE:" + ",".join(["1"] * 12) + "\nALL:" + "0," * 16 + "0\n"
                                             "broken line\n")
    found = block_weights.presets(tmp_path)
    assert found["MINE"] == ",".join(["1"] * 12) and found["ALL"] == "0," * 16 + "0"
    assert found["OUTD"] == PRESETS["OUTD"]
    assert "broken line" not in found and "# mine" not in found
    with pytest.raises(ValueError, match=r"Line 2 \(B\): 2 weights"):
        block_weights.save_presets(tmp_path, "A:" + ",".join(["1"] * 17) + "\nB:1,0")
    assert "MINE" in (tmp_path / "lbwpresets.txt").read_text()  # untouched
    assert block_weights.save_presets(tmp_path, "# note\n\nA:" + ",".join(["1"] * 17)) == 1
    assert block_weights.presets(tmp_path)["A"] == ",".join(["1"] * 17)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """tiny-sd with a LoRA on its attention projections, the same LoRA as a LoHa, and its mid block's layers alone;
    tiny-sdxl with a LoRA on both text encoders and its UNet."""
    from training.tiny_random import build_tiny_sd, build_tiny_sdxl, save_tiny_models

    root = tmp_path_factory.mktemp("lbw-models")
    save_tiny_models(root)
    loras = root / "Lora"
    loras.mkdir()
    weights = kohya_lora(build_tiny_sd(), 1)
    save_file(weights, loras / "kohya.safetensors")
    save_file(lycoris_from_lora(weights, "LoHa"), loras / "loha.safetensors")
    save_file({k: v for k, v in weights.items() if k.startswith("lora_unet_mid_block_")}, loras / "mid.safetensors")
    save_file(kohya_lora(build_tiny_sdxl(), 4), loras / "xl.safetensors")
    (loras / "lbwpresets.txt").write_text("MIDONLY:" + ",".join("1" if b == "M00" else "0" for b in IDS) + "\n")
    return root


@pytest.fixture(scope="module")
def engine(folders, tmp_path_factory):
    return engine_for(folders, tmp_path_factory.mktemp("out"))


def _only(*blocks: str) -> str:
    return ",".join("1" if block in blocks else "0" for block in IDS)


def test_block_weights_give_the_pictures_of_the_layers_they_keep(engine):
    plain, _ = run(engine, "a red circle")
    whole, _ = run(engine, "a red circle <lora:kohya:1>")
    assert np.array_equal(run(engine, f"a red circle <lora:kohya:1:lbw={_only(*IDS)}>")[0], whole)
    assert np.array_equal(run(engine, "a red circle <lora:kohya:1:NONE>")[0], plain)  # the extension's first form
    text_only, _ = run(engine, "a red circle <lora:kohya:1:0>")
    assert np.array_equal(run(engine, f"a red circle <lora:kohya:1:lbw={_only('BASE')}>")[0], text_only)
    unet_only, _ = run(engine, "a red circle <lora:kohya:0:1>")
    assert np.array_equal(run(engine, f"a red circle <lora:kohya:1:lbw={_only(*IDS[1:])}>")[0], unet_only)
    mid, result = run(engine, "a red circle <lora:kohya:1:lbw=MIDONLY>")  # a preset of lbwpresets.txt
    assert np.array_equal(mid, run(engine, "a red circle <lora:mid:1>")[0]) and result.warnings == []
    assert len({plain.tobytes(), whole.tobytes(), text_only.tobytes(), unet_only.tobytes(), mid.tobytes()}) == 5
    half, _ = run(engine, f"a red circle <lora:kohya:1:lbw={','.join(['0.5'] * 26)}>")
    assert np.array_equal(half, run(engine, "a red circle <lora:kohya:0.5>")[0])
    assert np.array_equal(run(engine, "a red circle")[0], plain)  # nothing left behind


def test_base_weighs_both_text_encoders_of_sdxl(engine):
    text_only, _ = run(engine, "a red circle <lora:xl:0.5:0>", model="tiny-sdxl")
    based, result = run(engine, "a red circle <lora:xl:1:lbw=0.5" + ",0" * 11 + ">", model="tiny-sdxl")  # SDXL's 12
    assert np.array_equal(based, text_only) and result.warnings == []
    assert not np.array_equal(based, run(engine, "a red circle", model="tiny-sdxl")[0])


def test_block_weights_of_a_lycoris_file_match_the_loras(engine):
    lora, _ = run(engine, "a red circle <lora:kohya:1:lbw=MIDONLY>")
    loha, result = run(engine, "a red circle <lora:loha:1:lbw=MIDONLY>")
    assert np.abs(loha - lora).max() <= 1 and result.warnings == []


def test_an_unknown_preset_skips_the_lora_with_a_warning(engine):
    plain, _ = run(engine, "a red circle")
    picture, result = run(engine, "a red circle <lora:kohya:1:lbw=OUTX>")
    assert np.array_equal(picture, plain)
    assert len(result.warnings) == 1 and "lbw=OUTX is not a preset (NONE, ALL" in result.warnings[0]
    assert "skipped" in result.warnings[0]


def test_the_outline_style_lives_in_the_embedded_models_up_blocks():
    """easel-outline's hollow shapes come from its up blocks' layers: with them alone the shapes are outlined, with
    the down and middle blocks alone they are filled, as without the LoRA."""
    from training.classify import hollowness
    from training.evaluate import eval_scenes, generate_images
    from training.lora import OUTLINED
    from training.shapes import full_caption

    model = ROOT / "models" / "Stable-diffusion" / "easel-shapes"
    if not (model / "model_index.json").is_file():
        pytest.skip("the embedded model is not in models/")
    prompts = [full_caption(scene, i % 3) for i, scene in enumerate(eval_scenes(8)) for _ in range(2)]
    up = _only("BASE", *(block for block in IDS if block.startswith("OUT")))
    down = _only("BASE", "M00", *(block for block in IDS if block.startswith("IN")))
    outlined = {}
    for name, spec in (("up", up), ("down", down)):
        pictures = generate_images([f"{p} <lora:easel-outline:1:lbw={spec}>" for p in prompts], [0, 1] * 8, model)
        outlined[name] = sum(hollowness(picture) > OUTLINED for picture in pictures)
    assert outlined["down"] == 0 and outlined["up"] >= 6, outlined
