"""The Train tab's textual inversion on tiny-sd (``trainer`` and ``dataset``: conftest): schedules, captions, created
files, training's mechanics (what both trainers share among them) and the API's endpoints and progress. What a
trained embedding means is checked on the embedded model (test_train_embedded.py)."""

import csv
import json
import random
import threading
import time

import pytest
import torch
from PIL import Image

from pipelines.embedding_training import (CreateRequest, TrainEmbeddingRequest, create_embedding, save_embedding,
                                          train_embedding)
from pipelines.embeddings import EmbeddingLibrary
from pipelines.errors import RequestError
from pipelines.infotext import parse_infotext
from pipelines.text_encoding import encode_captions, encode_prompts
from pipelines.training_run import _caption, _filewords, _weight, schedule, template_names


def _request(name: str, data_root: str, **values) -> TrainEmbeddingRequest:
    return TrainEmbeddingRequest(embedding_name=name, data_root=data_root, **values)


def test_schedules_read_as_a1111_reads_them():
    assert schedule("0.005", 1000, "Learning rate", "learn_rate") == [(0.005, 1000)]
    assert schedule("0.05:100, 0.005:1000, 0.0005", 5000, "Learning rate", "learn_rate") == [
        (0.05, 100), (0.005, 1000), (0.0005, 5000)]
    assert schedule("0.1:10000, 0.01", 500, "Learning rate", "learn_rate") == [(0.1, 500)]  # cut at max steps
    for bad in ("", "fast", "0.05:100, 0.005:50", "-1", "0.1:x", "nan"):
        with pytest.raises(RequestError) as caught:
            schedule(bad, 1000, "Learning rate", "learn_rate")
        assert caught.value.field == "learn_rate"
    assert _request("x", "d", learn_rate="0.01:30, 0.001:60", steps=1000).last_step == 60


@pytest.mark.parametrize("values, field", [
    ({"log_directory": "../elsewhere"}, "log_directory"), ({"log_directory": "/tmp"}, "log_directory"),
    ({"varsize": True, "batch_size": 2}, "batch_size"), ({"template_filename": "mine.txt"}, "template_filename"),
    ({"training_width": 100}, "training_width"), ({"latent_sampling_method": "sometimes"}, "latent_sampling_method"),
    ({"clip_grad_mode": "value", "clip_grad_value": "big"}, "clip_grad_value"), ({"tag_drop_out": 2}, "tag_drop_out"),
    ({"embedding_name": " "}, "embedding_name"), ({"steps": 0}, "steps"), ({"batch_size": "many"}, "batch_size"),
])
def test_a_training_request_names_what_it_cannot_use(values, field):
    with pytest.raises(RequestError) as caught:
        TrainEmbeddingRequest(**{"embedding_name": "x", "data_root": "d", **values})
    assert caught.value.field == field


def test_captions_come_from_text_files_or_names_and_tags_shuffle_or_drop(dataset):
    plain = _request("x", "d")
    assert _caption(dataset / "00000-a red field.png", plain) == "a red field"
    assert _caption(dataset / "00001-a blue field.png", plain) == "blue, wide, flat"
    words = _request("x", "d", dataset_filename_word_regex=r"\w+", dataset_filename_join_string="+")
    assert _caption(dataset / "00002-a green field!.png", words) == "a+green+field"  # A1111's filename settings
    assert _filewords("blue, wide, flat", plain, random.Random(0)) == "blue, wide, flat"
    shuffled = {_filewords("a, b, c, d", _request("x", "d", shuffle_tags=True), random.Random(seed))
                for seed in range(20)}
    assert len(shuffled) > 5 and all(sorted(s.split(", ")) == ["a", "b", "c", "d"] for s in shuffled)
    dropped = [_filewords("a, b, c, d", _request("x", "d", tag_drop_out=0.5), random.Random(seed))
               for seed in range(20)]
    kept = [[tag for tag in d.split(", ") if tag] for d in dropped]
    assert any(len(tags) < 4 for tags in kept) and all(set(tags) <= set("abcd") for tags in kept)
    assert "style_filewords.txt" in template_names() and "subject.txt" in template_names()


def test_create_embedding_starts_from_the_init_words_and_keeps_old_files(trainer):
    path = create_embedding(trainer, CreateRequest("mine", "red circle", 3))
    assert path == trainer.registry.models_dir / "embeddings" / "mine.pt"
    data = torch.load(path, weights_only=True)
    with trainer.registry.lease("tiny-sd") as model:
        table = model.pipe.text_encoder.get_input_embeddings().weight
        ids = model.pipe.tokenizer("red circle", add_special_tokens=False).input_ids
        hash_ = model.hash
    vectors = data["string_to_param"]["*"]
    assert torch.equal(vectors, table[[ids[0], ids[0], ids[1]]].detach())  # A1111: vector i takes word i*n/count
    assert (data["name"], data["step"], data["sd_checkpoint"], data["sd_checkpoint_name"]) == (
        "mine", 0, hash_, "tiny-sd")
    with pytest.raises(RequestError, match="exists"):
        create_embedding(trainer, CreateRequest("mine", "blue"))
    create_embedding(trainer, CreateRequest("mine", "", 2, overwrite_old=True))
    assert torch.equal(torch.load(path, weights_only=True)["string_to_param"]["*"], torch.zeros(2, table.shape[1]))
    with pytest.raises(RequestError, match="SD 1.x and 2.x"):
        create_embedding(trainer, CreateRequest("wide", model="tiny-sdxl"))
    for bad in ("", "../up", "a/b", "<x>"):
        with pytest.raises(RequestError):
            CreateRequest(bad)


def test_the_png_alpha_weighs_the_loss_as_a1111s(trainer, dataset):
    """Transparent latents weigh 0, opaque ones the rest (the mean is 1); a picture without transparency weighs 1."""
    alpha = Image.new("L", (64, 64), 0)
    alpha.paste(255, (32, 0, 64, 64))
    weight = _weight(alpha, torch.zeros(1, 4, 8, 8))
    assert weight.shape == (1, 4, 8, 8) and weight.mean().item() == pytest.approx(1.0)
    assert weight[..., :3].abs().max() < 0.05 and weight[..., 5:].min() > 1.9
    assert torch.equal(_weight(Image.new("L", (64, 64), 255), torch.zeros(1, 4, 8, 8)), torch.ones(1, 4, 8, 8))
    picture = Image.new("RGBA", (64, 64), (255, 0, 0, 255))
    picture.putalpha(alpha)
    picture.save(dataset / "00003-a half red field.png")
    create_embedding(trainer, CreateRequest("mine"))
    done = train_embedding(trainer, _request("mine", str(dataset), training_width=64, training_height=64, steps=2,
                                             use_weight=True, create_image_every=0, save_embedding_every=0))
    assert done.step == 2 and done.loss > 0


def test_a_safetensors_embedding_keeps_its_step_in_metadata(tmp_path):
    folder = tmp_path / "embeddings"
    save_embedding(folder / "kept.safetensors", torch.ones(2, 32), "kept", 40, ("abc", "tiny-sd"))
    library = EmbeddingLibrary(tmp_path)
    (item,) = library.files()
    assert library.notes(item)["step"] == 40 and library.notes(item)["sd_checkpoint_name"] == "tiny-sd"
    assert library.listing(None)["loaded"]["kept"]["step"] == 40


def test_captions_encode_as_prompts_do_with_gradients_to_the_vectors(trainer):
    create_embedding(trainer, CreateRequest("mine", "red circle", 2))
    (item,) = trainer.embeddings.files()
    with trainer.registry.lease("tiny-sd") as model:
        pipe = model.pipe
        fixed = trainer.embeddings.load(item, [("", pipe.text_encoder)])
        as_prompt = encode_prompts(pipe, "a mine square", "", library=trainer.embeddings).kwargs["prompt_embeds"]
        vectors = torch.nn.Parameter(fixed.vectors[0].clone())
        trained = type(fixed)("mine", (vectors,), "")
        context = encode_captions(pipe, ["a mine square", "mine"], trained, trainer.embeddings)
        assert torch.allclose(context[:1], as_prompt, atol=1e-6)
        context.square().sum().backward()
    assert vectors.grad is not None and vectors.grad.abs().sum() > 0


def test_training_logs_copies_pictures_and_loss_and_goes_on_from_its_step(trainer, dataset):
    create_embedding(trainer, CreateRequest("mine", "*", 2))
    seen = []
    request = _request("mine", str(dataset), training_width=64, training_height=64, steps=4, batch_size=2,
                       learn_rate="0.05:2, 0.01", create_image_every=2, save_embedding_every=3, seed=1,
                       template_filename="subject_filewords.txt", training_write_csv_every=2,
                       training_image_repeats_per_epoch=2)
    before = torch.load(trainer.registry.models_dir / "embeddings" / "mine.pt", weights_only=True)
    done = train_embedding(trainer, request, on_progress=seen.append)
    assert [(p.step, p.learn_rate) for p in seen] == [(1, 0.05), (2, 0.05), (3, 0.01), (4, 0.01)]
    assert [p.preview is not None for p in seen] == [False, True, False, True]
    saved = torch.load(done.path, weights_only=True)
    assert saved["step"] == 4 and not torch.equal(saved["string_to_param"]["*"], before["string_to_param"]["*"])
    assert [p.name for p in done.copies] == ["mine-3.pt"]
    assert torch.load(done.copies[0], weights_only=True)["step"] == 3
    assert [path.relative_to(done.log_dir).as_posix() for _, path in done.previews] == ["images/mine-2.png",
                                                                                         "images/mine-4.png"]
    with Image.open(done.previews[0][1]) as picture:
        prompt, _, params = parse_infotext(picture.info["parameters"])
    assert "mine" in prompt and params["Size"] == "64x64" and params["Steps"] == "20"
    assert done.log_dir.parent.parent == trainer.writer.root / "textual_inversion"
    rows = list(csv.DictReader(open(done.log_dir / "textual_inversion_loss.csv")))
    # every 2 steps; 3 pictures twice an epoch make 3 batches of 2 (once: 1, and step 4 would be in epoch 3)
    assert [(row["step"], row["epoch"]) for row in rows] == [("2", "0"), ("4", "1")] and float(rows[-1]["loss"]) > 0
    assert done.message.startswith("Training finished at 4 steps") and not done.interrupted
    (settings,) = done.log_dir.glob("settings-*.json")
    noted = json.loads(settings.read_text())
    assert (noted["seed"], noted["learn_rate"], noted["model"], noted["initial_step"], noted["pictures"]) == (
        1, "0.05:2, 0.01", "tiny-sd", 0, 3)
    assert not any(trainer.writer.root.glob("txt2img-images/**/*.png"))  # previews stay in the log
    with trainer.registry.lease("tiny-sd") as model:  # only the vectors learnt
        assert all(p.grad is None for m in (model.pipe.unet, model.pipe.text_encoder) for p in m.parameters())
    with pytest.raises(RequestError, match="trained to step 4"):
        train_embedding(trainer, request)
    again = train_embedding(trainer, _request("mine", str(dataset), training_width=64, training_height=64, steps=5,
                                              save_embedding_every=3, create_image_every=0, seed=1,
                                              save_training_settings_to_txt=False, training_write_csv_every=0))
    assert again.step == 5 and torch.load(again.path, weights_only=True)["step"] == 5
    assert again.copies == []  # step 5 only: no copy is due
    assert again.log_dir == done.log_dir and len(list(done.log_dir.glob("settings-*.json"))) == 1  # none this time
    assert len(list(csv.DictReader(open(done.log_dir / "textual_inversion_loss.csv")))) == 2  # nor a loss row


def test_an_interrupted_run_saves_where_it_got_to(trainer, dataset):
    """Interrupt (the Train tab's, A1111's API's) stops its owner's run after the current step, not another's."""
    create_embedding(trainer, CreateRequest("mine"))
    answers = []

    def interrupt(progress):
        if progress.step in (2, 3):
            answers.append(trainer.interrupt("bob" if progress.step == 2 else "alice"))

    done = train_embedding(trainer, _request("mine", str(dataset), training_width=64, training_height=64, steps=50,
                                             create_image_every=0, save_embedding_every=0,
                                             latent_sampling_method="random", clip_grad_mode="norm"),
                           on_progress=interrupt, owner="alice")
    assert answers == [False, True]
    assert done.interrupted and done.step == 3 and done.message.startswith("Training interrupted at 3 steps")
    assert torch.load(done.path, weights_only=True)["step"] == 3
    assert not trainer.interrupt("alice")  # the run is over: nothing of hers to stop


def test_the_optimizers_state_is_kept_beside_the_file_and_goes_on_while_the_file_is_unchanged(trainer, dataset):
    """A1111's save_optimizer_state: AdamW's state in ``mine.pt.optim`` with the file's hash; a later run goes on
    from it (Adam's step count too), one after the file changed starts afresh, and with the setting off neither."""
    create_embedding(trainer, CreateRequest("mine", "*", 1))

    def run(steps: int, keep: bool = True):
        return train_embedding(trainer, _request("mine", str(dataset), training_width=64, training_height=64,
                                                 steps=steps, create_image_every=0, save_embedding_every=0, seed=1,
                                                 save_training_settings_to_txt=False, training_write_csv_every=0,
                                                 save_optimizer_state=keep))

    def adam_steps(path) -> list[float]:
        kept = torch.load(path.with_name(path.name + ".optim"), weights_only=True)
        assert kept["optimizer_name"] == "AdamW"
        return [float(state["step"]) for state in kept["optimizer_state_dict"]["state"].values()]

    first = run(2)
    assert adam_steps(first.path) == [2.0] and first.message.endswith(".pt.")
    assert "went on from the state in mine.pt.optim" in run(4).message and adam_steps(first.path) == [4.0]
    vectors = torch.load(first.path, weights_only=True)["string_to_param"]["*"]
    save_embedding(first.path, vectors + 0.1, "mine", 4, ("", ""))  # changed since its state was kept
    assert "another state of mine.pt: the optimizer started afresh" in run(5).message
    assert adam_steps(first.path) == [1.0]
    off = run(6, keep=False)
    assert off.message.endswith(".pt.") and adam_steps(first.path) == [1.0]  # not read, not written


def test_pictures_kept_at_their_own_size_train_one_at_a_time(trainer, dataset):
    """Do not resize images: each picture at its size cut to whole latents (40x24 here), never resized."""
    create_embedding(trainer, CreateRequest("mine"))
    done = train_embedding(trainer, _request("mine", str(dataset), varsize=True, steps=3, create_image_every=0,
                                             save_embedding_every=0, shuffle_tags=True, tag_drop_out=0.3))
    assert done.step == 3 and done.loss > 0


@pytest.mark.parametrize("values, message", [
    ({"embedding_name": "nothing"}, "No embedding named 'nothing'"),
    ({"data_root": "/no/such/folder"}, "not a folder"),
    ({"batch_size": 4}, "fewer than the batch size 4"),
    ({"model": "tiny-sdxl"}, "SD 1.x and 2.x"),
])
def test_training_refuses_what_it_cannot_train_on(trainer, dataset, values, message):
    create_embedding(trainer, CreateRequest("mine"))
    with pytest.raises(RequestError, match=message):
        train_embedding(trainer, TrainEmbeddingRequest(**{"embedding_name": "mine", "data_root": str(dataset),
                                                          "steps": 2, **values}))


def test_the_api_creates_and_trains_as_a1111s(api_client, trainer, dataset, tmp_path):
    client, _ = api_client(trainer.registry.models_dir, outputs_dir=tmp_path / "api-outputs")
    made = client.post("/sdapi/v1/create/embedding", json={"name": "viaapi", "init_text": "red", "overwrite_old": False,
                                                           "num_vectors_per_token": 2})
    assert made.status_code == 200 and made.json()["info"].endswith("embeddings/viaapi.pt")
    again = client.post("/sdapi/v1/create/embedding", json={"name": "viaapi"})
    assert again.status_code == 422 and again.json()["field"] == "name"
    payload = {"embedding_name": "viaapi", "learn_rate": 0.01, "batch_size": 1, "gradient_step": 2,
               "data_root": str(dataset), "log_directory": "textual_inversion", "training_width": 64,
               "training_height": 64, "varsize": False, "steps": 2, "clip_grad_mode": "value", "clip_grad_value": 0.1,
               "shuffle_tags": False, "tag_drop_out": 0, "latent_sampling_method": "deterministic", "use_weight": False,
               "create_image_every": 0, "save_embedding_every": 0, "template_filename": "style.txt",
               "save_image_with_stored_embedding": True, "preview_from_txt2img": False, "preview_prompt": ""}
    options = {"training_write_csv_every": 1, "save_training_settings_to_txt": False}  # A1111's Training settings
    assert client.post("/sdapi/v1/options", json=options).status_code == 200
    bad = client.post("/sdapi/v1/options", json={"dataset_filename_word_regex": "(unclosed"})
    assert bad.status_code == 422 and bad.json()["field"] == "dataset_filename_word_regex"
    trained = client.post("/sdapi/v1/train/embedding", json=payload)
    assert trained.status_code == 200
    (log,) = (tmp_path / "api-outputs" / "textual_inversion").glob("*/viaapi")
    assert len(list(csv.DictReader(open(log / "textual_inversion_loss.csv")))) == 2 and not any(log.glob("settings*"))
    assert trained.json()["info"].startswith("train embedding complete: filename: ")
    assert trained.json()["info"].endswith("viaapi.pt error: None")
    listed = client.get("/sdapi/v1/embeddings").json()["loaded"]["viaapi"]
    assert listed["step"] == 2 and listed["vectors"] == 2
    previews = {"preview_from_txt2img": True, "preview_prompt": "a viaapi square", "preview_steps": 3,
                "preview_sampler_name": "DDIM", "preview_cfg_scale": 5, "preview_seed": 11, "preview_width": 64,
                "preview_height": 64, "create_image_every": 1, "steps": 3, "use_weight": True}
    assert client.post("/sdapi/v1/train/embedding", json={**payload, **previews}).status_code == 200
    with Image.open(log / "images" / "viaapi-3.png") as picture:
        prompt, _, params = parse_infotext(picture.info["parameters"])
    assert (prompt, params["Steps"], params["Sampler"], params["Seed"]) == ("a viaapi square", "3", "DDIM", "11")
    refused = client.post("/sdapi/v1/train/embedding", json={**payload, **previews, "preview_sampler_name": "Nope"})
    assert refused.status_code == 422 and refused.json()["field"] == "preview_sampler_name"
    assert client.post("/sdapi/v1/refresh-embeddings").status_code == 200


def test_the_apis_progress_follows_a_training_run_that_interrupt_stops(api_client, trainer, dataset, tmp_path):
    """As A1111 reports training: the steps as the state's jobs, the loss in ``textinfo``; then ``interrupt``."""
    client, _ = api_client(trainer.registry.models_dir, outputs_dir=tmp_path / "api-outputs")
    assert client.post("/sdapi/v1/create/embedding", json={"name": "polled"}).status_code == 200
    answers = {}
    payload = {"embedding_name": "polled", "data_root": str(dataset), "training_width": 64, "training_height": 64,
               "steps": 100000, "create_image_every": 3, "save_embedding_every": 0}
    thread = threading.Thread(target=lambda: answers.update(trained=client.post("/sdapi/v1/train/embedding",
                                                                                json=payload)))
    thread.start()
    deadline = time.monotonic() + 120
    seen = client.get("/sdapi/v1/progress").json()
    while seen["state"]["job_no"] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = client.get("/sdapi/v1/progress").json()
    assert (seen["state"]["job"], seen["state"]["job_count"]) == ("train-embedding", 100000)
    assert seen["progress"] == seen["state"]["job_no"] / 100000 and seen["eta_relative"] > 0
    assert seen["textinfo"].startswith("Loss: ") and "polled" in seen["textinfo"]  # the latest caption names it
    assert seen["current_image"]  # the preview made at step 3
    assert client.post("/sdapi/v1/interrupt").status_code == 200
    thread.join(120)
    assert answers["trained"].status_code == 200
    assert client.get("/sdapi/v1/progress").json()["state"]["job"] == ""  # nothing runs any more
    assert 3 <= torch.load(trainer.registry.models_dir / "embeddings" / "polled.pt")["step"] < 100000
