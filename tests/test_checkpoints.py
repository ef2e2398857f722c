"""Single-file checkpoints in the original SD/SDXL layout: detection per kind, offline loading, listing, VAEs."""

import json
import shutil
import socket
import types
from pathlib import Path

import pytest
import torch

from pipelines.checkpoints import CONFIGS_DIR, _predicts_v, config_folder, detect, load_checkpoint, override_vae
from pipelines.errors import ModelError
from pipelines.hashing import short_hash
from pipelines.registry import Registry
from training.single_file import (TINY_KINDS, header_only_file, meta_pipeline, tiny_checkpoint, to_original,
                                  write_tiny_checkpoints)

# Published parameter counts of the full-size UNets the shipped configs describe.
UNET_PARAMS = {"sd15": 859_520_964, "sdxl": 2_567_463_684, "koala-1b": 1_161_184_324, "koala-700m": 782_822_724}


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    """A models/ folder with one tiny single-file checkpoint per kind and its matching config folder."""
    root = tmp_path_factory.mktemp("ckpt-models")
    write_tiny_checkpoints(root)
    return root


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_each_kind_is_detected_from_its_keys_and_shapes(ckpt_dir, kind):
    found = detect(ckpt_dir / "Stable-diffusion" / f"tiny-{kind}.safetensors")
    assert found.kind == kind
    assert found.prediction == ("v_prediction" if kind == "sd2-v" else None)  # sd2-v: a v_pred key


def test_a_ztsnr_key_makes_the_schedulers_rescale_the_betas(ckpt_dir, tmp_path):
    """NoobAI-XL's mark of a zero terminal SNR model: every request's scheduler that can (Euler) rescales its betas."""
    from safetensors.torch import load_file, save_file

    from pipelines.samplers import make_scheduler

    path = tmp_path / "ztsnr.safetensors"
    save_file({**load_file(ckpt_dir / "Stable-diffusion" / "tiny-sd15.safetensors"), "ztsnr": torch.empty(0)}, path)
    assert detect(path).zero_snr and not detect(ckpt_dir / "Stable-diffusion" / "tiny-sd15.safetensors").zero_snr
    config = load_checkpoint(path, ckpt_dir, torch.float32).scheduler.config
    assert config.rescale_betas_zero_snr is True
    assert float(make_scheduler("Euler", "Automatic", config).alphas_cumprod[-1]) < 1e-6


@pytest.mark.parametrize("kind", sorted(p.name for p in CONFIGS_DIR.iterdir()))
def test_full_size_layouts_are_detected_from_the_header_alone(tmp_path, kind):
    """A header-only file (no tensor data at all) in each real architecture's original layout is identified."""
    pipe = meta_pipeline(CONFIGS_DIR / kind)
    layout = "sdxl" if hasattr(pipe, "text_encoder_2") else "sd2" if kind.startswith("sd2") else "sd1"
    state = to_original(pipe, layout)
    if kind == "sd2-v":
        state["v_pred"] = torch.empty(())
    assert detect(header_only_file(state, tmp_path / f"{kind}.safetensors")).kind == kind
    if kind in UNET_PARAMS:  # the shipped configs are the real architectures
        assert sum(p.numel() for p in pipe.unet.parameters()) == UNET_PARAMS[kind]


@pytest.mark.parametrize("kind", ["sd15", "sd15-inpainting", "sd2-v", "sdxl", "koala-700m"])
def test_offline_loading_restores_every_weight(ckpt_dir, kind, no_network):
    pipe = load_checkpoint(ckpt_dir / "Stable-diffusion" / f"tiny-{kind}.safetensors", ckpt_dir, torch.float32)
    reference, _, _ = tiny_checkpoint(kind)  # the same seeded pipeline the file was written from
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if hasattr(reference, name):
            expected, loaded = getattr(reference, name).state_dict(), getattr(pipe, name).state_dict()
            assert expected.keys() == loaded.keys()
            assert all(torch.equal(expected[k], loaded[k]) for k in expected), name
    assert type(pipe) is type(reference)
    assert pipe.scheduler.config.prediction_type == ("v_prediction" if kind == "sd2-v" else "epsilon")
    assert len(pipe.tokenizer) == 49408 and pipe.tokenizer.model_max_length == 77


def test_v_prediction_from_a1111_yaml_or_easel_json_beside_the_file(ckpt_dir, tmp_path):
    root = tmp_path / "Stable-diffusion"
    root.mkdir()
    for name in ("yaml-v", "json-v", "yaml-eps"):
        shutil.copy(ckpt_dir / "Stable-diffusion" / "tiny-sd2.safetensors", root / f"{name}.safetensors")
    (root / "yaml-v.yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    (root / "json-v.easel.json").write_text(json.dumps({"prediction_type": "v_prediction", "steps": 9}))
    (root / "yaml-eps.yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n")
    kinds = [detect(root / f"{n}.safetensors").kind for n in ("yaml-v", "json-v", "yaml-eps")]
    assert kinds == ["sd2-v", "sd2-v", "sd2"]
    assert detect(root / "yaml-eps.safetensors").prediction == "epsilon"
    (root / "broken.yaml").write_text("just text")
    shutil.copy(root / "yaml-eps.safetensors", root / "broken.safetensors")
    with pytest.raises(ModelError, match="broken.yaml is not an LDM config"):
        detect(root / "broken.safetensors")


class _Unet:
    """Stands in for a UNet whose prediction at the last timestep is its input plus ``offset``."""

    config = types.SimpleNamespace(in_channels=4, cross_attention_dim=8)
    dtype, device = torch.float32, torch.device("cpu")

    def __init__(self, offset: float):
        self.offset = offset

    def __call__(self, x, t, encoder_hidden_states):
        return types.SimpleNamespace(sample=x + self.offset)


def test_an_unmarked_sd2_file_is_probed_as_a1111_does():
    assert _predicts_v(_Unet(-2.0)) and not _predicts_v(_Unet(0.01))


def test_pickled_checkpoints_are_read_only_with_weights_only(ckpt_dir, tmp_path):
    from safetensors.torch import load_file

    state = load_file(str(ckpt_dir / "Stable-diffusion" / "tiny-sd15.safetensors"))
    torch.save({"state_dict": state, "global_step": 1}, tmp_path / "nested.ckpt")
    assert detect(tmp_path / "nested.ckpt").kind == "sd15"
    torch.save({"state_dict": state, "payload": types.SimpleNamespace(x=1)}, tmp_path / "evil.ckpt")
    with pytest.raises(ModelError, match="evil.ckpt cannot be read safely.*convert it to .safetensors"):
        detect(tmp_path / "evil.ckpt")


def test_files_are_listed_beside_folders_and_generate_with_their_hash(ckpt_dir, models_dir, tmp_path, no_network):
    root = tmp_path / "Stable-diffusion"
    shutil.copytree(models_dir / "Stable-diffusion" / "tiny-sd", root / "tiny-sd15")  # a folder with the file's stem
    shutil.copytree(ckpt_dir / "configs", tmp_path / "configs")
    for kind in ("sd15", "sdxl"):
        shutil.copy(ckpt_dir / "Stable-diffusion" / f"tiny-{kind}.safetensors", root)
    (root / "not-a-model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    (root / "tiny-sdxl.easel.json").write_text(json.dumps({"steps": 7}))
    registry = Registry(tmp_path)
    assert [m.name for m in registry.list_models()] == ["tiny-sd15", "tiny-sd15.safetensors", "tiny-sdxl"]
    info = registry.resolve("tiny-sdxl")
    assert (info.family, info.local, info.defaults["steps"], info.defaults["width"]) == ("sdxl", True, 7, 64)

    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter
    from pipelines.request import GenerationRequest

    engine = Engine(registry, OutputWriter(tmp_path / "out"), preview_every=0)
    request = GenerationRequest.from_values({"prompt": "a red circle", "steps": 2, "width": 64, "height": 64,
                                             "model": "tiny-sdxl"})
    infotext = engine.generate(request).infotexts[0]
    assert f"Model hash: {short_hash(root / 'tiny-sdxl.safetensors')}, Model: tiny-sdxl," in infotext
    assert "VAE" not in infotext


def _vae_file(pipe, path: Path) -> Path:
    """The pipeline's VAE alone in the original layout, as VAE files are shared (no prefix)."""
    from safetensors.torch import save_file

    state = {k.removeprefix("first_stage_model."): v.contiguous() for k, v in to_original(pipe, "sd1").items()
             if k.startswith("first_stage_model.")}
    save_file(state, str(path))
    return path


def test_vae_override_from_a_file_or_folder_globally_or_per_model(ckpt_dir, tmp_path, no_network):
    from training.tiny_random import build_tiny_sd

    other = build_tiny_sd(seed=7)  # different VAE weights, same architecture
    vae_dir = tmp_path / "VAE"
    vae_dir.mkdir()
    _vae_file(other, vae_dir / "other.safetensors")
    other.vae.save_pretrained(vae_dir / "other-folder")
    root = tmp_path / "Stable-diffusion"
    root.mkdir()
    shutil.copytree(ckpt_dir / "configs", tmp_path / "configs")
    shutil.copy(ckpt_dir / "Stable-diffusion" / "tiny-sd15.safetensors", root / "global.safetensors")
    shutil.copy(ckpt_dir / "Stable-diffusion" / "tiny-sd15.safetensors", root / "own.safetensors")
    shutil.copy(ckpt_dir / "Stable-diffusion" / "tiny-sd15.safetensors", root / "folder.safetensors")
    (root / "own.easel.json").write_text(json.dumps({"vae": "None"}))
    (root / "folder.easel.json").write_text(json.dumps({"vae": "other-folder"}))
    registry = Registry(tmp_path, vae="other.safetensors")
    expected = other.vae.state_dict()
    for name, vae_name in (("global", "other.safetensors"), ("folder", "other-folder"), ("own", None)):
        with registry.lease(name) as model:
            loaded = model.pipe.vae.state_dict()
            same = all(torch.equal(expected[k], loaded[k]) for k in expected)
            assert same == (vae_name is not None), name
            assert model.vae == ((vae_name, short_hash(vae_dir / vae_name)) if vae_name else (None, None))

    from pipelines.request import GenerationRequest

    request = GenerationRequest.from_values({"prompt": "x"})
    text = request.infotext(1, "global", "abc", vae=("other.safetensors", "0123"))
    assert "Model hash: abc, Model: global, VAE hash: 0123, VAE: other.safetensors," in text


@pytest.mark.parametrize("name", ["../Stable-diffusion/tiny-sd15.safetensors", "/etc/passwd", "missing.pt"])
def test_a_vae_is_a_name_in_models_vae_never_a_path(tmp_path, name):
    with pytest.raises(ModelError, match="Unknown VAE"):
        override_vae(types.SimpleNamespace(), tmp_path, name)


def test_a_kind_without_a_config_folder_says_where_it_belongs(tmp_path):
    with pytest.raises(ModelError, match="No config folder for koala-1b-inpainting .*models/configs/koala-1b-inp"):
        config_folder(tmp_path, "koala-1b-inpainting")
