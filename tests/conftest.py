"""Test-wide setup: offline Hugging Face before any HF import, quiet Gradio, shared tiny fixtures."""

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    """A models/ folder holding the tiny random SD ("tiny-sd") and SDXL ("tiny-sdxl") pipelines."""
    from training.tiny_random import save_tiny_models

    root = tmp_path_factory.mktemp("models")
    save_tiny_models(root)
    return root


@pytest.fixture(scope="session")
def kandinsky_dir(tmp_path_factory):
    """A models/ folder holding a tiny random Kandinsky 2.2 ("tiny-kandinsky": prior and decoder in one combined
    folder, the layout Easel reads, with 64x64 and 4 steps in its easel.json) and tiny-sd beside it."""
    import json

    from benchmarks.random_pipelines import KANDINSKY22, architectures, build
    from training.tiny_random import build_tiny_sd

    root = tmp_path_factory.mktemp("kandinsky-models")
    folder = root / "Stable-diffusion" / "tiny-kandinsky"
    build(KANDINSKY22, tiny=True, device="cpu", arch=architectures()).save_pretrained(folder)
    (folder / "easel.json").write_text(json.dumps({"width": 64, "height": 64, "steps": 4}))
    build_tiny_sd().save_pretrained(root / "Stable-diffusion" / "tiny-sd")
    return root


@pytest.fixture(scope="module")
def sd():
    """A tiny random StableDiffusionPipeline in memory, fresh per test module."""
    from training.tiny_random import build_tiny_sd

    return build_tiny_sd()


@pytest.fixture(scope="module")
def sdxl():
    """A tiny random StableDiffusionXLPipeline in memory, fresh per test module."""
    from training.tiny_random import build_tiny_sdxl

    return build_tiny_sdxl()


@pytest.fixture(scope="session")
def registry(models_dir):
    from pipelines.registry import Registry

    return Registry(models_dir, device="cpu", default_model="tiny-sd")


@pytest.fixture
def engine(registry, tmp_path):
    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter

    return Engine(registry, OutputWriter(tmp_path / "outputs"), preview_every=2)


@pytest.fixture(scope="session")
def api_client():
    """``api_client(models_dir, **settings)``: an in-process client of the ``/sdapi/v1`` routes and their services,
    on a models folder (tiny-sd the default model, nothing saved, unless ``settings`` say otherwise)."""
    def make(models_dir, **settings):
        from fastapi import FastAPI
        from fastapi.testclient import TestClient

        from api.routes import create_router
        from pipelines.services import Services, Settings

        services = Services.build(Settings(**{"models_dir": models_dir, "device": "cpu", "save_outputs": False,
                                              "default_model": "tiny-sd", **settings}))
        app = FastAPI()
        app.include_router(create_router(services))
        return TestClient(app), services

    return make


@pytest.fixture(scope="session")
def serve_app(tmp_path_factory):
    """``with serve_app(models_dir) as url``: the real app (flags -> settings -> services -> UI) launched
    in-process on a models folder, with tiny-sd as the default model (``default_model=None``: the app's own), saving
    into ``outputs`` (a new folder when None), where its settings file is too."""
    from contextlib import contextmanager

    import app
    from ui.layout import PAGE

    @contextmanager
    def serve(models_dir, default_model: str | None = "tiny-sd", outputs: Path | None = None):
        chosen = ["--default-model", default_model] if default_model else []
        outputs = outputs or tmp_path_factory.mktemp("out")
        args = app.parse_args(["--models-dir", str(models_dir), "--outputs-dir", str(outputs), *chosen,
                               "--device", "cpu", "--ui-settings-file", str(outputs / "config.json"),
                               "--ui-config-file", str(outputs / "ui-config.json")])
        demo = app.build_app(app.settings_from_args(args))
        demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True, **PAGE)
        try:
            yield demo.local_url
        finally:
            demo.close()

    return serve


@pytest.fixture(scope="session")
def app_url(models_dir, serve_app):
    """The real app on the tiny models."""
    with serve_app(models_dir) as url:
        yield url


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def api_server(models_dir, tmp_path_factory):
    """The real app launched from its flags with the REST API, two API users and a separate UI login.

    Yields (base URL, outputs folder). API users: alice:wonderland and bob:builder; UI login: ui:secret.
    """
    import app

    outputs = tmp_path_factory.mktemp("api-out")
    args = app.parse_args(["--models-dir", str(models_dir), "--outputs-dir", str(outputs), "--default-model",
                           "tiny-sd", "--device", "cpu", "--port", str(_free_port()), "--auth", "ui:secret",
                           "--api-auth", "alice:wonderland,bob:builder",
                           "--ui-settings-file", str(outputs / "config.json"),
                           "--ui-config-file", str(outputs / "ui-config.json")])
    demo = app.launch(args, block=False)
    yield demo.local_url.rstrip("/"), outputs
    demo.close()


@pytest.fixture
def trainer(models_dir, tmp_path):
    """An engine on a models folder of its own (tiny-sd and tiny-sdxl linked in), so the Train tab's created files
    stay here."""
    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter
    from pipelines.registry import Registry

    root = tmp_path / "models"
    (root / "Stable-diffusion").mkdir(parents=True)
    for name in ("tiny-sd", "tiny-sdxl"):
        (root / "Stable-diffusion" / name).symlink_to(models_dir / "Stable-diffusion" / name)
    return Engine(Registry(root, device="cpu", default_model="tiny-sd"), OutputWriter(tmp_path / "outputs"))


@pytest.fixture
def dataset(tmp_path):
    """A training folder: three plain pictures (40x24) named by their captions, one with a .txt caption, and a file
    that is not a picture."""
    from PIL import Image

    folder = tmp_path / "data"
    folder.mkdir()
    for index, colour in enumerate(("red", "blue", "green")):
        Image.new("RGB", (40, 24), colour).save(folder / f"{index:05d}-a {colour} field.png")
    (folder / "00001-a blue field.txt").write_text("blue, wide, flat\n")
    (folder / "notes.md").write_text("not a picture")
    return folder
