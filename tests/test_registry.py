"""The registry: load once, variants share weights without dtype change, LRU eviction, leases, bad models."""

import json
import shutil
import threading
from pathlib import Path

import pytest
import torch

from pipelines.errors import ModelError, RequestError
from pipelines.registry import Registry


def test_variants_share_weights_and_keep_the_base_dtype(models_dir):
    registry = Registry(models_dir, device="cpu", dtype=torch.bfloat16)
    with registry.lease("tiny-sd") as model:
        base = model.pipe
        pointer = base.unet.conv_in.weight.data_ptr()
        for task in ("txt2img", "img2img", "inpaint"):
            variant = model.pipeline(task)
            assert variant.unet is base.unet and variant.vae is base.vae
            assert variant.unet.conv_in.weight.data_ptr() == pointer
            assert model.pipeline(task) is variant  # derived once
        assert type(model.pipeline("img2img")).__name__ == "StableDiffusionImg2ImgPipeline"
        assert base.unet.dtype == torch.bfloat16 and base.text_encoder.dtype == torch.bfloat16
        assert base.vae.dtype == torch.bfloat16
    assert [r["name"] for r in registry.resident()] == ["tiny-sd"]


def test_a_model_is_loaded_once_even_from_two_threads(models_dir):
    registry = Registry(models_dir)
    pipes = []

    def use():
        with registry.lease("tiny-sd") as model:
            pipes.append(model.pipe)

    threads = [threading.Thread(target=use) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pipes[0] is pipes[1]


def test_least_recently_used_model_is_evicted_under_a_small_budget(models_dir):
    registry = Registry(models_dir)
    with registry.lease("tiny-sd") as model:
        one_model = model.nbytes
    registry.memory_budget = int(one_model * 2.5)  # room for tiny-sd (small) or tiny-sdxl, not both
    with registry.lease("tiny-sdxl"):
        pass
    assert [r["name"] for r in registry.resident()] == ["tiny-sdxl"]
    with registry.lease("tiny-sd"):
        pass
    assert [r["name"] for r in registry.resident()] == ["tiny-sd"]


def test_evicted_models_wait_in_cpu_ram_then_are_dropped_when_it_runs_short(models_dir):
    """On a GPU an evicted model moves to CPU RAM first (forced here, where the device is the CPU itself)."""
    with Registry(models_dir).lease("tiny-sdxl") as sized:
        one = sized.nbytes  # the larger of the two tiny models
    registry = Registry(models_dir, memory_budget=one)  # one model on the device at a time
    registry.park, registry.ram_budget = True, one  # and one waiting in RAM
    with registry.lease("tiny-sdxl") as large:
        pass
    with registry.lease("tiny-sd") as small:
        pass
    assert {r["name"]: r["device"] for r in registry.resident()} == {"tiny-sdxl": "cpu (parked)", "tiny-sd": "cpu"}
    with registry.lease("tiny-sdxl") as back:  # moved back, not loaded again
        assert back is large and not back.parked
    assert {r["name"]: r["device"] for r in registry.resident()} == {"tiny-sdxl": "cpu", "tiny-sd": "cpu (parked)"}
    registry.ram_budget = 0  # no room left in RAM: the next eviction drops
    with registry.lease("tiny-sd") as again:
        assert again is small
    assert [r["name"] for r in registry.resident()] == ["tiny-sd"]


def test_a_leased_model_is_never_evicted(models_dir):
    registry = Registry(models_dir, memory_budget=1)
    with registry.lease("tiny-sd") as first:
        with registry.lease("tiny-sdxl"):
            assert {r["name"] for r in registry.resident()} == {"tiny-sd", "tiny-sdxl"}
        assert first.pipe.unet is not None
    assert registry.unload("tiny-sd") and not registry.unload("missing")


def test_defaults_come_from_the_model_folder(models_dir, tmp_path):
    registry = Registry(models_dir)
    info = registry.resolve("tiny-sdxl")
    assert info.family == "sdxl" and (info.defaults["width"], info.defaults["height"]) == (64, 64)
    assert registry.resolve("tiny-sd").family == "sd"
    folder = tmp_path / "Stable-diffusion" / "custom"
    shutil.copytree(models_dir / "Stable-diffusion" / "tiny-sd", folder)
    (folder / "easel.json").write_text(json.dumps({"steps": 8, "cfg_scale": 2.5}))
    defaults = Registry(tmp_path).resolve("custom").defaults
    assert (defaults["steps"], defaults["cfg_scale"], defaults["width"]) == (8, 2.5, 64)


def test_unknown_models_and_unreachable_hub_ids_give_readable_errors(models_dir):
    registry = Registry(models_dir, offline=True)
    with pytest.raises(RequestError, match="Unknown model 'nothing here'"):
        registry.resolve("nothing here")
    with pytest.raises(ModelError, match="someone/not-cached is not downloaded and Easel is offline"):
        with registry.lease("someone/not-cached"):
            pass


def test_a_broken_tokenizer_is_refused(models_dir, tmp_path):
    folder = tmp_path / "Stable-diffusion" / "broken"
    shutil.copytree(models_dir / "Stable-diffusion" / "tiny-sd", folder)
    (folder / "tokenizer" / "tokenizer.json").unlink()  # leave a tokenizer that loads but is nearly empty
    (folder / "tokenizer" / "vocab.json").write_text(json.dumps({"a</w>": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}))
    (folder / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ModelError, match="broken tokenizer"):
        with Registry(tmp_path).lease("broken"):
            pass


def test_model_hash_is_a1111_short_sha256(models_dir):
    registry = Registry(models_dir)
    with registry.lease("tiny-sd") as model:
        assert len(model.hash) == 10 and int(model.hash, 16) >= 0


@pytest.mark.parametrize("name", ["../Stable-diffusion/tiny-sd", "/etc", "..", "./tiny-sd", "tiny-sd/../tiny-sd",
                                  "a/../../b", "~/models"])
def test_model_names_are_names_never_paths(models_dir, name):
    with pytest.raises(RequestError, match="Unknown model"):
        Registry(models_dir).resolve(name)


CATALOG = Path(__file__).resolve().parent.parent / "models" / "catalog.json"


def test_the_catalog_offers_known_models_with_their_presets(models_dir):
    registry = Registry(models_dir, catalog=CATALOG)
    names = registry.names()
    assert names[:2] == ["tiny-sd", "tiny-sdxl"]  # what is on disk first
    assert {"sd-1.5", "sd-2.1", "sdxl-base-1.0", "sdxl-turbo", "koala-700m", "koala-1b", "koala-700m-llava-cap",
            "koala-1b-llava-cap", "koala-lightning-700m", "koala-lightning-1b"} <= set(names)
    lightning = registry.resolve("koala-lightning-1b")
    assert (lightning.source, lightning.family, lightning.local) == ("etri-vilab/koala-lightning-1b", "sdxl", False)
    assert {k: lightning.defaults[k] for k in ("steps", "cfg_scale", "sampler", "scheduler", "width")} == \
        {"steps": 10, "cfg_scale": 3.5, "sampler": "Euler", "scheduler": "SGM Uniform", "width": 1024}
    for info in registry.catalog.values():  # every preset is a valid request
        from pipelines.request import GenerationRequest

        GenerationRequest.from_values(dict(info.defaults))


@pytest.mark.parametrize("name, where", [
    ("koala-700m", r"its diffusers folder \(from etri-vilab/koala-700m\) at .*Stable-diffusion/koala-700m"),
    ("kandinsky-2.2", r"a combined Kandinsky 2.2 folder at .*Stable-diffusion/kandinsky-2.2"),
])
def test_an_uncached_catalog_model_offline_says_where_to_put_it(models_dir, name, where):
    registry = Registry(models_dir, catalog=CATALOG, offline=True)
    with pytest.raises(ModelError, match=rf"{name} is not downloaded and Easel is offline: put {where}"):
        with registry.lease(name):
            pass
