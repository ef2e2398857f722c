"""LyCORIS files (LoHa, LoKr, full, IA3, norm) through the engine on the tiny models, and on the embedded one.

A LoHa whose second product is all ones, a LoKr whose first factor is [[1]] and a full difference make exactly a
LoRA's changes, so their pictures are checked against that LoRA's (read by PEFT, another path); the weights are
put back exactly after each pass; Stability's SDXL block names land on diffusers' modules; the other algorithms'
changes are checked against their definitions; what cannot apply is reported by name.
"""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from network_support import engine_for, kohya_from_peft, kohya_lora, lycoris_from_lora, run
from pipelines.engine import Engine
from pipelines.networks import describe, lycoris
from pipelines.outputs import OutputWriter
from pipelines.registry import Registry
from pipelines.request import GenerationRequest

ROOT = Path(__file__).resolve().parent.parent
# tiny-sdxl (one layer per block) in diffusers' names and in Stability's, for its attention blocks
SGM_TINY_SDXL = {"down_blocks_1_attentions_0": "input_blocks_3_1", "mid_block_attentions_0": "middle_block_1",
                 "up_blocks_0_attentions_0": "output_blocks_0_1", "up_blocks_0_attentions_1": "output_blocks_1_1"}


def stability_names(weights: dict) -> dict:
    renamed = {}
    for key, value in weights.items():
        for diffusers, sgm in SGM_TINY_SDXL.items():
            key = key.replace(f"lora_unet_{diffusers}_", f"lora_unet_{sgm}_")
        renamed[key] = value
    return renamed


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from diffusers import UNet2DConditionModel

    from training.tiny_random import build_tiny_sd, build_tiny_sdxl, save_tiny_models

    root = tmp_path_factory.mktemp("lyco-models")
    save_tiny_models(root)
    koala = build_tiny_sdxl()
    koala.unet = UNet2DConditionModel.from_config(koala.unet.config, mid_block_type=None)  # KOALA-700M's way
    koala.save_pretrained(root / "Stable-diffusion" / "tiny-koala")
    loras = root / "Lora"
    loras.mkdir()
    sd, sdxl = build_tiny_sd(), build_tiny_sdxl()
    base, other, xl = kohya_lora(sd, 1), kohya_lora(sd, 2), kohya_lora(sdxl, 4)
    save_file(base, loras / "kohya.safetensors")
    save_file(other, loras / "other.safetensors")
    save_file(xl, loras / "xl.safetensors")
    for algorithm in ("LoHa", "LoKr", "full"):
        save_file(lycoris_from_lora(base, algorithm), loras / f"{algorithm.lower()}.safetensors")
    save_file(lycoris_from_lora(other, "LoHa"), loras / "other-loha.safetensors")
    save_file(stability_names(lycoris_from_lora(xl, "LoHa")), loras / "xl-loha.safetensors")
    with_oft = lycoris_from_lora(base, "LoHa")
    with_oft["lora_unet_down_blocks_0_resnets_0_conv1.oft_blocks"] = torch.zeros(4, 2, 2)
    misfit = next(k for k in with_oft if "to_q.hada_w1_b" in k)
    with_oft[misfit] = torch.ones(2, 3)  # a to_q that reads 3 features: this model's read 8
    save_file(with_oft, loras / "partly.safetensors")
    save_file({"lora_unet_down_blocks_0_resnets_0_conv1.oft_blocks": torch.zeros(4, 2, 2)}, loras / "oft.safetensors")
    return root


@pytest.fixture(scope="module")
def engine(folders, tmp_path_factory):
    return engine_for(folders, tmp_path_factory.mktemp("out"))


@pytest.fixture(scope="module")
def plain(engine):
    return run(engine, "a red circle")[0]


@pytest.mark.parametrize("name", ["loha", "lokr", "full"])
def test_each_algorithm_makes_the_picture_of_the_lora_with_the_same_changes(engine, plain, name):
    lora, _ = run(engine, "a red circle <lora:kohya:0.8>")
    picture, result = run(engine, f"a red circle <lora:{name}:0.8>")
    assert result.warnings == [] and 'Lora hashes: "' + name in result.infotexts[0]
    assert np.abs(picture - lora).max() <= 1 and np.abs(picture - plain).mean() > 1


def test_the_weights_come_back_exactly_and_each_side_has_its_own_weight(engine, plain):
    zero, _ = run(engine, "a red circle <lora:loha:0>")
    assert np.array_equal(zero, plain)
    run(engine, "a red circle <lora:loha:1.5>")
    assert np.array_equal(run(engine, "a red circle")[0], plain)
    for weights in ("0.8:0", "0:0.8"):  # text encoder only, UNet only; <lyco:...> is A1111's old tag for them
        lora, _ = run(engine, f"a red circle <lora:kohya:{weights}>")
        picture, _ = run(engine, f"a red circle <lyco:loha:{weights}>")
        assert np.abs(picture - lora).max() <= 1 and not np.array_equal(picture, plain)


def test_beside_a_lora_on_the_same_layers(engine):
    """The LoRA is loaded first, so the LoHa's layers are PEFT's wrappers: the change goes to the layer inside."""
    both_lora, _ = run(engine, "a red circle <lora:kohya:0.7> <lora:other:0.6>")
    mixed, result = run(engine, "a red circle <lora:kohya:0.7> <lora:other-loha:0.6>")
    assert result.warnings == [] and np.abs(mixed - both_lora).max() <= 1


def test_an_sdxl_file_in_stabilitys_block_names_and_on_a_koala_unet(engine):
    lora, _ = run(engine, "a red circle <lora:xl:0.9>", model="tiny-sdxl")
    picture, result = run(engine, "a red circle <lora:xl-loha:0.9>", model="tiny-sdxl")
    assert result.warnings == [] and np.abs(picture - lora).max() <= 1
    _, result = run(engine, "a red circle <lora:xl-loha:0.9>", model="tiny-koala")  # no mid block: 8 of 48 layers
    assert result.warnings == ["LoRA 'xl-loha' (xl-loha.safetensors) applied to 83% of its layers: layers naming "
                               "modules this model lacks (KOALA's UNets drop some of SDXL's blocks)."]


def test_stabilitys_names_for_every_kind_of_sdxl_layer():
    """The real SDXL UNet (on torch's meta device: names, no weights) and kohya's names for its layers."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    from benchmarks.random_pipelines import architectures
    from training.tiny_random import build_tiny_sdxl

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(architectures()["unet"]["sdxl"]["config"])
    tiny = build_tiny_sdxl()
    expected = {
        "unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q":
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
        "unet_input_blocks_8_1_proj_in": "down_blocks.2.attentions.1.proj_in",
        "unet_input_blocks_1_0_in_layers_2": "down_blocks.0.resnets.0.conv1",
        "unet_input_blocks_4_0_skip_connection": "down_blocks.1.resnets.0.conv_shortcut",
        "unet_input_blocks_3_0_op": "down_blocks.0.downsamplers.0.conv",
        "unet_middle_block_1_transformer_blocks_9_ff_net_2": "mid_block.attentions.0.transformer_blocks.9.ff.net.2",
        "unet_middle_block_2_emb_layers_1": "mid_block.resnets.1.time_emb_proj",
        "unet_output_blocks_2_2_conv": "up_blocks.0.upsamplers.0.conv",
        "unet_output_blocks_5_1_transformer_blocks_1_attn2_to_out_0":
            "up_blocks.1.attentions.2.transformer_blocks.1.attn2.to_out.0",
        "unet_output_blocks_8_0_out_layers_3": "up_blocks.2.resnets.2.conv2",
        "unet_output_blocks_8_0_in_layers_0": "up_blocks.2.resnets.2.norm1",
        "unet_time_embed_0": "time_embedding.linear_1",
        "unet_label_emb_0_2": "add_embedding.linear_2",
        "unet_input_blocks_0_0": "conv_in",
        "unet_out_2": "conv_out",
        "te1_text_model_encoder_layers_0_self_attn_q_proj": "encoder.layers.0.self_attn.q_proj",
        "te2_text_model_encoder_layers_1_mlp_fc1": "text_model.encoder.layers.1.mlp.fc1",
    }
    pipe = SimpleNamespace(unet=unet, text_encoder=tiny.text_encoder, text_encoder_2=tiny.text_encoder_2)
    found = lycoris._module_names(pipe, {f"lora_{name}": {} for name in expected})
    assert {name.removeprefix("lora_"): path for name, (_, path) in found.items()} == expected


def test_tucker_cores_kronecker_factors_ia3_and_norm_layers_change_what_their_definitions_say():
    g = torch.Generator().manual_seed(0)
    conv = torch.randn(6, 4, 3, 3, generator=g)
    up, down = torch.randn(6, 2, generator=g), torch.randn(2, 4, generator=g)
    core = torch.randn(2, 2, 3, 3, generator=g)
    by_tap = torch.stack([torch.stack([up @ core[:, :, k, m] @ down for m in range(3)], -1) for k in range(3)], -2)
    alpha = torch.tensor(1.0)  # rank 2: half of each change
    lora_mid, _ = lycoris.delta({"lora_up.weight": up[..., None, None], "lora_down.weight": down[..., None, None],
                                 "lora_mid.weight": core, "alpha": alpha}, conv)
    assert torch.allclose(lora_mid, by_tap / 2, atol=1e-5)
    loha, _ = lycoris.delta({"hada_w1_a": up.T, "hada_w1_b": down, "hada_t1": core, "hada_w2_a": up.T,
                             "hada_w2_b": down, "hada_t2": core, "alpha": alpha}, conv)
    assert torch.allclose(loha, by_tap * by_tap / 2, atol=1e-4)

    w1a, w1b, w2 = torch.randn(2, 1, generator=g), torch.randn(1, 2, generator=g), torch.randn(3, 2, 3, 3, generator=g)
    lokr, _ = lycoris.delta({"lokr_w1_a": w1a, "lokr_w1_b": w1b, "lokr_w2": w2, "alpha": alpha}, conv)
    w1 = w1a @ w1b
    blocks = [(i, j) for i in range(2) for j in range(2)]  # block (i, j) of a Kronecker product: w1[i, j] * w2
    assert all(torch.allclose(lokr[3 * i:3 * i + 3, 2 * j:2 * j + 2], w1[i, j] * w2) for i, j in blocks)

    linear, scales = torch.randn(3, 5, generator=g), torch.randn(5, generator=g)
    on_input, _ = lycoris.delta({"weight": scales, "on_input": torch.tensor(True)}, linear)
    on_output, _ = lycoris.delta({"weight": scales[:3], "on_input": torch.tensor(False)}, linear)
    assert torch.allclose(on_input, linear * scales) and torch.allclose(on_output, linear * scales[:3, None])

    weight, bias = lycoris.delta({"w_norm": torch.ones(5), "b_norm": torch.full((5,), 2.0)}, torch.zeros(5))
    assert weight.tolist() == [1.0] * 5 and bias.tolist() == [2.0] * 5


def test_what_cannot_apply_is_reported_by_name_and_the_rest_applies(engine, plain):
    picture, result = run(engine, "a red circle <lora:partly:1>")
    (warning,) = result.warnings
    assert warning.startswith("LoRA 'partly' (partly.safetensors) applied to ") and "OFT layers, which Easel does " \
        "not apply; 1 layers whose shapes do not fit this model's." in warning, warning
    assert not np.array_equal(picture, plain)
    picture, result = run(engine, "a red circle <lora:xl-loha:1> <lora:oft:1>")
    assert np.array_equal(picture, plain)
    assert result.warnings == ["LoRA 'xl-loha' (xl-loha.safetensors) is a context 16 LyCORIS network; this model is "
                               "context 8: skipped.",
                               "LoRA 'oft' (oft.safetensors) has no layer Easel can apply to this model (OFT layers, "
                               "which Easel does not apply): skipped."]


def test_cards_name_the_algorithm(engine):
    cards = {item.name: describe(item) for item in engine.networks.files("lora")}
    assert cards["loha"] == "context 8 LoHa" and cards["lokr"] == "context 8 LoKr" and cards["full"] == "context 8 full"
    assert cards["kohya"] == "context 8" and cards["xl-loha"] == "context 16 LoHa"


def test_under_sequential_offload_and_on_int8_weights(folders, tmp_path, plain):
    """``--lowvram`` keeps the weights in accelerate's hooks (its offload of the UNet, run here on the CPU); int8
    UNet layers are left out."""
    from accelerate import cpu_offload

    from pipelines.quantize import quantize

    reference, _ = run(engine_for(folders, tmp_path / "a"), "a red circle <lora:loha:0.8>")
    offloaded = engine_for(folders, tmp_path / "b")
    with offloaded.registry.lease("tiny-sd") as model:
        cpu_offload(model.pipe.unet, execution_device=torch.device("cpu"))
        assert model.pipe.unet.conv_in.weight.is_meta
    assert np.array_equal(run(offloaded, "a red circle <lora:loha:0.8>")[0], reference)
    assert np.array_equal(run(offloaded, "a red circle")[0], plain)

    quantised = engine_for(folders, tmp_path / "c")
    with quantised.registry.lease("tiny-sd") as model:
        quantize(model.pipe.unet, "int8")
    _, result = run(quantised, "a red circle <lora:loha:0.8>")
    assert "of int8/fp8 weights (--weights), which it cannot change" in result.warnings[0]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """The embedded model beside its easel-outline LoRA and that LoRA as a LoHa and a LoKr."""
    from safetensors.torch import load_file

    if not (ROOT / "models" / "Stable-diffusion" / "easel-shapes" / "model_index.json").is_file():
        pytest.skip("the embedded model is not in models/")
    root = tmp_path_factory.mktemp("embedded")
    (root / "Stable-diffusion").symlink_to(ROOT / "models" / "Stable-diffusion")
    (root / "Lora").mkdir()
    outline = ROOT / "models" / "Lora" / "easel-outline.safetensors"
    (root / "Lora" / outline.name).symlink_to(outline)
    kohya = kohya_from_peft(load_file(outline))
    for algorithm in ("LoHa", "LoKr"):
        save_file(lycoris_from_lora(kohya, algorithm), root / "Lora" / f"outline-{algorithm.lower()}.safetensors")
    return Engine(Registry(root, device="cpu"), OutputWriter(tmp_path_factory.mktemp("out"), enabled=False))


def test_the_outline_style_as_loha_and_lokr_on_the_embedded_model(embedded):
    from training.classify import classify, hollowness
    from training.lora import OUTLINED

    def paint(tag: str):
        request = GenerationRequest(prompt=f"a large red circle in the middle, white background {tag}",
                                    model="easel-shapes", width=64, height=64, steps=20, sampler="Euler a", seed=3)
        return embedded.generate(request, save=False).images[0]

    plain, lora = paint(""), paint("<lora:easel-outline:1>")
    assert hollowness(plain) <= OUTLINED < hollowness(lora)
    for name in ("outline-loha", "outline-lokr"):
        picture = paint(f"<lora:{name}:1>")
        assert np.abs(np.asarray(picture, np.int16) - np.asarray(lora, np.int16)).max() <= 2
        assert hollowness(picture) > OUTLINED and classify(picture).colour == "red"
