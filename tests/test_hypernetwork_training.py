"""The Train tab's hypernetworks on tiny-sd (text context 8 wide, attention channels 16; ``trainer`` and ``dataset``:
conftest): created files in A1111's layout, what creation refuses, training's mechanics and the API's endpoints. What
a trained hypernetwork means is checked on the embedded model (test_train_embedded.py)."""

import csv
import json

import pytest
import torch
from PIL import Image

from pipelines.errors import RequestError
from pipelines.hypernetwork_training import (CreateHypernetworkRequest, TrainHypernetworkRequest, create_hypernetwork,
                                             model_widths, train_hypernetwork)
from pipelines.infotext import parse_infotext
from pipelines.networks.files import NetworkFile
from pipelines.networks.hypernetwork import Hypernetwork, HypernetworkProcessor


def _create(trainer, name="mine", sizes=(8, 16), **values):
    torch.manual_seed(0)  # creation starts from random weights, as A1111's
    return create_hypernetwork(trainer, CreateHypernetworkRequest(name, sizes, **values))


def _request(data_root, **values) -> TrainHypernetworkRequest:
    return TrainHypernetworkRequest(**{"hypernetwork_name": "mine", "data_root": str(data_root),
                                       "training_width": 64, "training_height": 64, **values})


def test_a_created_hypernetwork_is_a1111s_file(trainer):
    path = _create(trainer, layer_structure="1, 2, 1", activation_func="relu", use_dropout=True,
                   dropout_structure="0, 0.1, 0")
    assert path == trainer.registry.models_dir / "hypernetworks" / "mine.pt"
    data = torch.load(path, weights_only=True)
    assert sorted(k for k in data if isinstance(k, int)) == [8, 16]
    # Linear, ReLU, Dropout, Linear: A1111's indices skip the modules without weights; no activation after the last
    assert set(data[8][0]) == {"linear.0.weight", "linear.0.bias", "linear.3.weight", "linear.3.bias"}
    assert data[16][1]["linear.0.weight"].shape == (32, 16) and data[16][1]["linear.3.weight"].shape == (16, 32)
    assert (data["name"], data["step"], data["layer_structure"], data["activation_func"], data["use_dropout"],
            data["dropout_structure"], data["activate_output"], data["weight_initialization"]) == (
        "mine", 0, [1, 2, 1], "relu", True, [0, 0.1, 0], False, "Normal")
    weight = data[8][0]["linear.0.weight"]
    assert 0.005 < weight.std() < 0.02 and not data[8][0]["linear.0.bias"].any()  # Normal: std 0.01, zero biases
    loaded = Hypernetwork.load(NetworkFile("hypernet", "mine", path))
    key = loaded.layers[8][0]
    assert not key.training and not any(p.requires_grad for p in key.parameters())
    x = torch.randn(2, 8)
    assert torch.allclose(x + key(x), x, atol=0.01)  # a new one barely changes the context

    with pytest.raises(RequestError, match="exists"):
        _create(trainer)
    _create(trainer, weight_init="XavierNormal", add_layer_norm=True, overwrite_old=True)
    data = torch.load(path, weights_only=True)
    assert data[8][0]["linear.0.weight"].std() > 0.1 and data["is_layer_norm"]
    assert set(data[8][0]) == {f"linear.{i}.{p}" for i in range(4) for p in ("weight", "bias")}  # a norm per layer


@pytest.mark.parametrize("values, field", [
    ({"layer_structure": "2, 1"}, "layer_structure"), ({"layer_structure": "1, x, 1"}, "layer_structure"),
    ({"layer_structure": "1"}, "layer_structure"), ({"layer_structure": "1, 0, 1"}, "layer_structure"),
    ({"use_dropout": True, "dropout_structure": "0, 0.5"}, "dropout_structure"),
    ({"use_dropout": True, "dropout_structure": "0, 1, 0"}, "dropout_structure"),
    ({"use_dropout": True, "dropout_structure": "0.1, 0, 0"}, "dropout_structure"),
    ({"activation_func": "sparkle"}, "activation_func"), ({"weight_init": "Zeros"}, "weight_init"),
    ({"enable_sizes": ()}, "enable_sizes"), ({"enable_sizes": ("wide",)}, "enable_sizes"),
    ({"enable_sizes": (0,)}, "enable_sizes"), ({"name": "../up"}, "name"),
])
def test_creation_names_what_it_cannot_use(values, field):
    with pytest.raises(RequestError) as caught:
        CreateHypernetworkRequest(**{"name": "mine", **values})
    assert caught.value.field == field


def test_a_model_folder_tells_its_widths(trainer):
    assert model_widths(trainer.registry, "tiny-sd") == [8, 16]
    assert model_widths(trainer.registry, "no-such-model") == []


def test_training_logs_copies_pictures_and_loss_and_goes_on_from_its_step(trainer, dataset):
    _create(trainer, activation_func="swish", use_dropout=True, dropout_structure="0, 0.2, 0")
    before = torch.load(trainer.registry.models_dir / "hypernetworks" / "mine.pt", weights_only=True)
    seen = []
    request = _request(dataset, steps=4, batch_size=2, learn_rate="0.01", create_image_every=2,
                       save_hypernetwork_every=3, seed=1, training_write_csv_every=3)
    with trainer.registry.lease("tiny-sd") as model:
        processors = {name: type(p) for name, p in model.pipe.unet.attn_processors.items()}
    done = train_hypernetwork(trainer, request, on_progress=seen.append)
    assert [p.step for p in seen] == [1, 2, 3, 4] and [p.preview is not None for p in seen] == [False, True] * 2
    saved = torch.load(done.path, weights_only=True)
    assert saved["step"] == 4 and saved["sd_checkpoint_name"] == "tiny-sd" and saved["activation_func"] == "swish"
    for width in (8, 16):  # both modules learnt, key and value networks alike
        for which in (0, 1):
            assert not torch.equal(saved[width][which]["linear.3.weight"], before[width][which]["linear.3.weight"])
    assert [p.name for p in done.copies] == ["mine-3.pt"] and done.copies[0].parent.name == "hypernetworks"
    assert torch.load(done.copies[0], weights_only=True)["step"] == 3
    with Image.open(done.previews[0][1]) as picture:
        prompt, _, params = parse_infotext(picture.info["parameters"])
    assert prompt.endswith("<hypernet:mine:1>") and params["Size"] == "64x64"
    rows = list(csv.DictReader(open(done.log_dir / "hypernetwork_loss.csv")))
    assert [row["step"] for row in rows] == ["3", "4"] and float(rows[-1]["loss"]) > 0  # every 3, and the last
    assert done.message.startswith("Training finished at 4 steps") and "Hypernetwork saved to" in done.message
    (settings,) = done.log_dir.glob("settings-*.json")
    noted = json.loads(settings.read_text())
    assert (noted["hypernetwork_name"], noted["dropout_structure"], noted["sizes"]) == ("mine", [0, 0.2, 0], [8, 16])
    with trainer.registry.lease("tiny-sd") as model:  # the model untouched: its processors back, no gradients
        unet = model.pipe.unet
        assert {name: type(p) for name, p in unet.attn_processors.items()} == processors
        assert HypernetworkProcessor not in processors.values()
        assert all(p.grad is None for m in (unet, model.pipe.text_encoder) for p in m.parameters())
    with pytest.raises(RequestError, match="trained to step 4"):
        train_hypernetwork(trainer, request)
    again = train_hypernetwork(trainer, _request(dataset, steps=5, create_image_every=0, save_hypernetwork_every=0))
    assert again.step == 5 and torch.load(again.path, weights_only=True)["step"] == 5


@pytest.mark.parametrize("sizes, values, message", [
    ((8,), {"hypernetwork_name": "nothing"}, "No hypernetwork named 'nothing'"),
    ((16,), {}, "no module for this model's text context \\(width 8"),
    ((8,), {"model": "tiny-sdxl"}, "SD 1.x and 2.x"),
])
def test_training_refuses_what_it_cannot_train(trainer, dataset, sizes, values, message):
    _create(trainer, sizes=sizes)
    with pytest.raises(RequestError, match=message):
        train_hypernetwork(trainer, _request(dataset, steps=2, **values))


def test_the_api_creates_and_trains_as_a1111s(api_client, trainer, dataset, tmp_path):
    client, _ = api_client(trainer.registry.models_dir, outputs_dir=tmp_path / "api-outputs")
    created = {"name": "viaapi", "enable_sizes": ["8", "16"], "overwrite_old": False, "layer_structure": [1, 1.5, 1],
               "activation_func": "relu", "weight_init": "KaimingNormal", "add_layer_norm": False,
               "use_dropout": False, "dropout_structure": None}
    made = client.post("/sdapi/v1/create/hypernetwork", json=created)
    assert made.status_code == 200 and made.json()["info"].endswith("hypernetworks/viaapi.pt")
    assert torch.load(trainer.registry.models_dir / "hypernetworks" / "viaapi.pt")[8][0]["linear.0.weight"].shape == (
        12, 8)
    again = client.post("/sdapi/v1/create/hypernetwork", json={"name": "viaapi", "enable_sizes": [8]})
    assert again.status_code == 422 and again.json()["field"] == "name"
    bad = client.post("/sdapi/v1/create/hypernetwork", json={"name": "other", "layer_structure": "1, 2"})
    assert bad.status_code == 422 and bad.json()["field"] == "layer_structure"
    payload = {"hypernetwork_name": "viaapi", "learn_rate": 0.0001, "batch_size": 1, "gradient_step": 1,
               "data_root": str(dataset), "log_directory": "textual_inversion", "training_width": 64,
               "training_height": 64, "varsize": False, "steps": 2, "clip_grad_mode": "norm", "clip_grad_value": 1,
               "shuffle_tags": False, "tag_drop_out": 0, "latent_sampling_method": "once", "use_weight": False,
               "create_image_every": 0, "save_hypernetwork_every": 0, "template_filename": "style_filewords.txt",
               "preview_from_txt2img": False, "preview_prompt": "", "preview_steps": 20}
    trained = client.post("/sdapi/v1/train/hypernetwork", json=payload)
    assert trained.status_code == 200
    assert trained.json()["info"].startswith("train hypernetwork complete: filename: ")
    assert trained.json()["info"].endswith("viaapi.pt error: None")
    assert torch.load(trainer.registry.models_dir / "hypernetworks" / "viaapi.pt")["step"] == 2
    assert "viaapi" in [h["name"] for h in client.get("/sdapi/v1/hypernetworks").json()]
    missing = client.post("/sdapi/v1/train/hypernetwork", json={"data_root": str(dataset)})
    assert missing.status_code == 422
