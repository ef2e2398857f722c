"""A1111 hypernetworks on the tiny SD model: a .pt file written here in A1111's layout (per-width key/value MLPs,
``linear.N`` indices that skip activation and dropout modules); multiplier 0 is no hypernetwork, 1 changes the
picture, the UNet's own processors are back afterwards, the processor is A1111's formula, bad files are refused."""

import pickle

import numpy as np
import pytest
import torch

from pipelines.engine import Engine
from pipelines.outputs import OutputWriter
from pipelines.registry import Registry
from pipelines.request import GenerationRequest

# tiny-sd: text context 8 wide (cross-attention), 16 channels where its attention is (self-attention)
WIDTHS = (8, 16)


def mlp_state(width: int, seed: int) -> dict:
    """Weights of A1111's MLP for layer_structure [1, 2, 2, 1], relu, use_dropout and activate_output False:
    linear.0 (w -> 2w), relu (1), dropout (2), linear.3 (2w -> 2w), relu (4), linear.5 (2w -> w)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {0: (2 * width, width), 3: (2 * width, 2 * width), 5: (width, 2 * width)}
    state = {}
    for index, (rows, cols) in shapes.items():
        state[f"linear.{index}.weight"] = torch.randn(rows, cols, generator=g) * 0.5
        state[f"linear.{index}.bias"] = torch.randn(rows, generator=g) * 0.1
    return state


def a1111_hypernetwork(widths=WIDTHS, seed: int = 0) -> dict:
    data = {w: (mlp_state(w, seed + 2 * w), mlp_state(w, seed + 2 * w + 1)) for w in widths}
    data.update(layer_structure=[1, 2, 2, 1], activation_func="relu", is_layer_norm=False, use_dropout=True,
                activate_output=False, last_layer_dropout=False, name="tiny", step=100, sd_checkpoint="abc",
                sd_checkpoint_name="tiny-sd", weight_initialization="Normal")
    return data


class _Evil:
    def __reduce__(self):
        import os

        return os.system, ("echo pwned",)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from safetensors.torch import save_file

    from training.tiny_random import save_tiny_models

    root = tmp_path_factory.mktemp("hyper-models")
    save_tiny_models(root)
    folder = root / "hypernetworks"
    folder.mkdir()
    torch.save(a1111_hypernetwork(), folder / "tiny.pt")
    torch.save(a1111_hypernetwork(seed=7), folder / "second.pt")
    old = {8: ({"linear1.weight": torch.randn(16, 8), "linear1.bias": torch.zeros(16),
                "linear2.weight": torch.randn(8, 16) * 0.1, "linear2.bias": torch.zeros(8)},) * 2}
    torch.save(old, folder / "old.pt")  # the first format: linear1/linear2, [1, 2, 1], no activation
    torch.save(a1111_hypernetwork(widths=(768, 320, 640, 1280)), folder / "sd15.pt")
    torch.save({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, folder / "a-lora.pt")
    (folder / "corrupt.pt").write_bytes(b"PK\x03\x04 truncated zip")
    with open(folder / "evil.pt", "wb") as fh:
        pickle.dump(_Evil(), fh)
    save_file({"x": torch.zeros(1)}, folder / "ignored.safetensors")  # A1111 reads only .pt hypernetworks
    return root


@pytest.fixture(scope="module")
def engine(folders, tmp_path_factory):
    registry = Registry(folders, device="cpu", default_model="tiny-sd")
    return Engine(registry, OutputWriter(tmp_path_factory.mktemp("out"), enabled=False))


def run(engine, prompt: str):
    request = GenerationRequest(prompt=prompt, model="tiny-sd", width=64, height=64, steps=3, seed=5, sampler="Euler")
    result = engine.generate(request, save=False)
    return np.asarray(result.images[0], dtype=np.int16), result


@pytest.fixture(scope="module")
def plain(engine):
    return run(engine, "a blue square")[0]


def test_multiplier_zero_is_no_hypernetwork_and_one_changes_the_picture(engine, plain):
    zero, result = run(engine, "a blue square <hypernet:tiny:0>")
    assert np.array_equal(zero, plain) and result.warnings == []
    one, _ = run(engine, "a blue square <hypernet:tiny:1>")
    assert np.abs(one - plain).mean() > 1
    half, _ = run(engine, "a blue square <hypernet:tiny:0.5>")
    assert not np.array_equal(half, one) and not np.array_equal(half, plain)


def test_processors_are_restored_and_no_residue_is_left(engine, plain):
    with engine.registry.lease("tiny-sd") as model:
        before = {name: type(p) for name, p in model.pipe.unet.attn_processors.items()}
    run(engine, "a blue square <hypernet:tiny:1> <hypernet:second:0.7>")
    with engine.registry.lease("tiny-sd") as model:
        assert {name: type(p) for name, p in model.pipe.unet.attn_processors.items()} == before
    assert np.array_equal(run(engine, "a blue square")[0], plain)


def test_old_format_loads_and_applies(engine, plain):
    picture, result = run(engine, "a blue square <hypernet:old:1>")
    assert result.warnings == [] and not np.array_equal(picture, plain)


def test_processor_is_a1111s_formula_on_keys_and_values(folders):
    """Against diffusers' own processor on an attention whose to_k/to_v first apply x + mlp(x) * m."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    from pipelines.networks.files import NetworkFile
    from pipelines.networks.hypernetwork import Hypernetwork, HypernetworkProcessor

    network = Hypernetwork.load(NetworkFile("hypernet", "tiny", folders / "hypernetworks" / "tiny.pt"))
    torch.manual_seed(0)
    hidden = torch.randn(2, 6, 16)
    for context in (torch.randn(2, 5, 8), None):  # cross-attention (text, width 8), self-attention (width 16)
        attn = Attention(16, cross_attention_dim=8 if context is not None else None, heads=2, dim_head=8)
        got = HypernetworkProcessor([(network, 0.7)])(attn, hidden, context)
        width = 8 if context is not None else 16
        key_mlp, value_mlp = network.layers[width]
        attn.to_k = torch.nn.Sequential(_Residual(key_mlp, 0.7), attn.to_k)
        attn.to_v = torch.nn.Sequential(_Residual(value_mlp, 0.7), attn.to_v)
        expected = AttnProcessor2_0()(attn, hidden, context)
        assert torch.allclose(got, expected, atol=1e-6)


class _Residual(torch.nn.Module):
    def __init__(self, mlp, multiplier):
        super().__init__()
        self.mlp, self.multiplier = mlp, multiplier

    def forward(self, x):
        return x + self.mlp(x) * self.multiplier


def test_mlp_layout_follows_a1111(folders):
    from pipelines.networks.files import NetworkFile
    from pipelines.networks.hypernetwork import Hypernetwork

    network = Hypernetwork.load(NetworkFile("hypernet", "tiny", folders / "hypernetworks" / "tiny.pt"))
    kinds = [type(m).__name__ for m in network.layers[8][0]]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear"]
    assert not network.layers[8][0].training


@pytest.mark.parametrize("name, message", [
    ("evil", "pickle that would run code"),
    ("corrupt", "cannot be read"),
    ("a-lora", "not an A1111 hypernetwork"),
    ("sd15", "no layers for this model's text context"),
    ("ignored", "not found"),
    ("missing", "not found"),
])
def test_bad_files_are_refused_by_name_and_the_generation_goes_on(engine, plain, name, message, capfd):
    picture, result = run(engine, f"a blue square <hypernet:{name}:1>")
    assert np.array_equal(picture, plain)
    assert len(result.warnings) == 1 and f"'{name}'" in result.warnings[0] and message in result.warnings[0]
    assert "pwned" not in capfd.readouterr().out


def test_families_on_cards(engine):
    from pipelines.networks import describe

    cards = {item.name: describe(item) for item in engine.networks.files("hypernet")}
    assert cards["sd15"] == "SD 1.x" and cards["tiny"] == "widths 8/16" and cards["evil"] == "unreadable"
    assert "ignored" not in cards
