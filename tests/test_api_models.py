"""The API's model management, in-process on a folder of its own: VAEs (listed, switched through ``sd_vae``, kept),
unload and reload of checkpoints, memory, and the listings of A1111 features Easel does not have."""

import json

import numpy as np
import pytest

from api.encoding import decode_image

SMALL = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 2, "seed": 5}


@pytest.fixture(scope="module")
def served(tmp_path_factory, api_client):
    """(client, services) on tiny-sd and, in models/VAE, another tiny VAE ("other")."""
    from training.tiny_random import build_tiny_sd

    root = tmp_path_factory.mktemp("api-models")
    build_tiny_sd().save_pretrained(root / "Stable-diffusion" / "tiny-sd")
    build_tiny_sd(seed=7).vae.save_pretrained(root / "VAE" / "other")
    return api_client(root)


def picture(client) -> tuple[np.ndarray, dict]:
    response = client.post("/sdapi/v1/txt2img", json=SMALL)
    assert response.status_code == 200, response.text
    body = response.json()
    return np.asarray(decode_image(body["images"][0], "image")), json.loads(body["info"])


def test_sd_vae_lists_models_vae_and_switches_every_model_without_its_own(served):
    client, services = served
    assert client.get("/sdapi/v1/sd-vae").json() == [
        {"model_name": "other", "filename": str(services.registry.models_dir / "VAE" / "other")}]
    assert client.post("/sdapi/v1/refresh-vae").status_code == 200
    assert client.get("/sdapi/v1/options").json()["sd_vae"] == "Automatic"
    own, info = picture(client)
    assert "VAE:" not in info["infotexts"][0] and info["sd_vae_name"] is None
    try:
        assert client.post("/sdapi/v1/options", json={"sd_vae": "other"}).status_code == 200
        assert client.get("/sdapi/v1/options").json()["sd_vae"] == "other"
        switched, info = picture(client)
        assert "VAE: other," in info["infotexts"][0] and not np.array_equal(own, switched)
        assert info["sd_vae_name"] == "other" and len(info["sd_vae_hash"]) == 10

        refused = client.post("/sdapi/v1/options", json={"sd_vae": "../Stable-diffusion/tiny-sd/vae"})
        assert refused.status_code == 422 and refused.json()["field"] == "sd_vae"
        assert "Unknown VAE" in refused.json()["detail"]
        assert client.get("/sdapi/v1/options").json()["sd_vae"] == "other"  # a refused value changes nothing
    finally:
        assert client.post("/sdapi/v1/options", json={"sd_vae": "Automatic"}).status_code == 200
    back, info = picture(client)
    assert "VAE:" not in info["infotexts"][0] and np.array_equal(own, back)


def test_the_vae_picked_is_kept_for_the_next_start(served, api_client, tmp_path, caplog):
    """A1111 keeps ``sd_vae`` in config.json: the next start uses it unless --vae names one; one no longer in
    models/VAE is a warning, A1111's "Automatic" each model's own."""
    from pipelines.services import Services, Settings

    root, path = served[1].registry.models_dir, tmp_path / "config.json"
    client, _ = api_client(root, config_file=path)
    assert client.post("/sdapi/v1/options", json={"sd_vae": "other"}).status_code == 200
    assert json.loads(path.read_text()) == {"sd_vae": "other"}

    def start(**settings) -> str | None:
        return Services.build(Settings(models_dir=root, device="cpu", config_file=path, **settings)).registry.vae

    assert start() == "other"
    assert start(vae="Automatic") is None
    path.write_text(json.dumps({"sd_vae": "gone.safetensors"}))
    assert start() is None and "'gone.safetensors', is not in models/VAE" in caplog.text
    path.write_text(json.dumps({"sd_vae": "Automatic"}))
    assert start() is None


def test_unload_frees_the_models_and_reload_brings_the_current_one_back(served):
    client, services = served
    picture(client)
    assert [m["name"] for m in services.registry.resident()] == ["tiny-sd"]
    assert client.post("/sdapi/v1/unload-checkpoint").json() == {}
    assert services.registry.resident() == []
    assert client.post("/sdapi/v1/reload-checkpoint").json() == {}
    assert [m["name"] for m in services.registry.resident()] == ["tiny-sd"]


def test_memory_in_a1111_shape(served):
    client, _ = served
    memory = client.get("/sdapi/v1/memory").json()
    ram = memory["ram"]
    assert 0 < ram["used"] < ram["total"] and ram["free"] == ram["total"] - ram["used"]
    assert memory["cuda"] == {"error": "unavailable"}  # the CPU


def test_the_scripts_are_listed_and_features_easel_does_not_have_are_listed_empty(served):
    client, _ = served
    scripts = ["prompts from file or textbox", "prompt matrix", "x/y/z plot", "asymmetric tiling", "loopback",
               "sd upscale"]
    assert client.get("/sdapi/v1/scripts").json() == {"txt2img": scripts[:4], "img2img": scripts}
    info = client.get("/sdapi/v1/script-info").json()
    assert [(item["name"], item["is_img2img"]) for item in info] == [
        *((name, False) for name in scripts[:4]), *((name, True) for name in scripts)]
    assert [arg["label"] for arg in info[3]["args"]] == ["Tile X", "Tile Y"]
    txt2img_xyz, img2img_xyz = info[2]["args"], info[6]["args"]
    assert [arg["label"] for arg in txt2img_xyz[9:]] == [
        "Draw legend", "Include Sub Images", "Include Sub Grids", "Keep -1 for seeds", "Vary seeds for X",
        "Vary seeds for Y", "Vary seeds for Z", "Grid margins (px)", "Use text inputs instead of dropdowns"]
    # a type's index counts in A1111 1.10's list of the tab's axes
    assert txt2img_xyz[0]["choices"][:6] == ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "Hires steps"]
    assert txt2img_xyz[0]["choices"].index("Size") == 41 and img2img_xyz[3]["choices"].index("Size") == 40
    assert img2img_xyz[6]["choices"][5:8] == ["CFG Scale", "Image CFG Scale", "Prompt S/R"]
    assert [arg["label"] for arg in info[-2]["args"]] == [
        "Loops", "Final denoising strength", "Denoising strength curve", "Append interrogated prompt at each iteration"]
    assert [arg["label"] for arg in info[-1]["args"]] == ["Info", "Tile overlap", "Upscaler", "Scale Factor"]
    assert [arg["label"] for arg in info[0]["args"]] == ["Iterate seed every line", "Use same random seed for all "
                                                         "lines", "Insert prompts at the", "List of prompt inputs"]
    assert len(info[1]["args"]) == 5 and info[1]["args"][3]["choices"] == ["comma", "space"]
    assert [info[1]["args"][4][key] for key in ("label", "value", "minimum", "maximum", "step")] == [
        "Grid margins (px)", 0, 0, 500, 2]  # A1111's slider
    for path in ("face-restorers", "realesrgan-models", "extensions"):
        assert client.get(f"/sdapi/v1/{path}").json() == [], path
