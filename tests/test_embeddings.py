"""Textual inversion: tiny embedding files in every format, built here, used as words in prompts."""

import hashlib
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from pipelines.embeddings import EmbeddingLibrary
from pipelines.engine import Engine
from pipelines.infotext import parse_infotext
from pipelines.outputs import OutputWriter
from pipelines.request import GenerationRequest
from pipelines.text_encoding import encode_prompts


class RunsCode:
    def __reduce__(self):
        return print, ("this pickle runs code",)


def token_vectors(encoder, tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return encoder.get_input_embeddings().weight[ids].detach().clone()


@pytest.fixture(scope="module")
def library(sd, sdxl, tmp_path_factory):
    """Embeddings whose vectors are those of real words, so a prompt with one must equal one with the words."""
    root = tmp_path_factory.mktemp("models")
    folder = root / "embeddings"
    (folder / "sub").mkdir(parents=True)
    red = token_vectors(sd.text_encoder, sd.tokenizer, "red")
    red_circle = token_vectors(sd.text_encoder, sd.tokenizer, "red circle")
    torch.save({"string_to_param": {"*": red}, "name": "a1111red", "step": 500, "sd_checkpoint": "abc123",
                "sd_checkpoint_name": "tiny"}, folder / "a1111red.pt")
    save_file({"emb_params": red_circle}, folder / "sub" / "safered.safetensors")
    torch.save({"<diffred>": red[0]}, folder / "diffred.bin")
    save_file({"clip_l": token_vectors(sdxl.text_encoder, sdxl.tokenizer, "red"),
               "clip_g": token_vectors(sdxl.text_encoder_2, sdxl.tokenizer_2, "red")}, folder / "xlred.safetensors")
    (folder / "broken.safetensors").write_bytes(b"not a safetensors file at all")
    torch.save({"string_to_param": {"*": torch.zeros(1, 5)}}, folder / "narrow.pt")
    torch.save({"string_to_param": {"*": RunsCode()}}, folder / "evil.pt")
    return EmbeddingLibrary(root)


def embeds(pipe, prompt, library=None, negative=""):
    return encode_prompts(pipe, prompt, negative, library=library)


@pytest.mark.parametrize("word, same_as", [("a1111red", "red"), ("safered", "red circle"), ("diffred", "red")])
def test_each_format_puts_its_vectors_where_its_word_is(sd, library, word, same_as):
    used = embeds(sd, f"a {word}, on white", library)
    plain = embeds(sd, f"a {same_as}, on white")
    assert torch.equal(used.kwargs["prompt_embeds"], plain.kwargs["prompt_embeds"])
    assert list(used.used) == [word] and not used.warnings


def test_embedding_words_take_weights_and_work_in_the_negative_prompt(sd, library):
    weighted = embeds(sd, "a (a1111red:1.4)", library).kwargs["prompt_embeds"]
    assert torch.equal(weighted, embeds(sd, "a (red:1.4)").kwargs["prompt_embeds"])
    negative = embeds(sd, "a circle", library, negative="diffred")
    assert torch.equal(negative.kwargs["negative_prompt_embeds"], embeds(sd, "red").kwargs["prompt_embeds"])
    assert "diffred" in negative.used


def test_sdxl_embedding_goes_into_both_encoders(sdxl, library):
    used = embeds(sdxl, "a xlred circle", library, negative="blurry").kwargs
    plain = embeds(sdxl, "a red circle", negative="blurry").kwargs
    assert all(torch.equal(used[k], plain[k]) for k in plain)


def test_bad_files_are_refused_by_name_and_the_word_stays_text(sd, sdxl, library):
    for word, reason in [("broken", "cannot be read"), ("narrow", "made for other text encoders"),
                         ("evil", "would run code")]:
        result = embeds(sd, f"a {word} circle", library)
        assert len(result.warnings) == 1 and f"'{word}'" in result.warnings[0] and reason in result.warnings[0]
        assert torch.equal(result.kwargs["prompt_embeds"], embeds(sd, f"a {word} circle").kwargs["prompt_embeds"])
        assert not result.used
    sd_file_on_sdxl = embeds(sdxl, "a a1111red", library)
    assert "made for other text encoders" in sd_file_on_sdxl.warnings[0] and not sd_file_on_sdxl.used


def test_the_token_counter_counts_an_embedding_as_its_vectors(sd, library):
    """A1111 counts an embedding by its vectors, not its name's text: "a1111red" (six tokens of text) is one
    vector, an SDXL file's name counts its vectors once; an unreadable file stays text."""
    from pipelines.text_encoding import token_count

    def count(prompt: str, embeddings=library) -> tuple[int, int]:
        return token_count(sd.tokenizer, prompt, 20, embeddings)

    assert count("a a1111red") == count("a red", None) == (2, 75) and count("a a1111red", None) == (7, 75)
    assert count("a xlred, safered") == count("a red, red circle", None)
    assert count("a1111red " * 80) == (80, 150) and count("a broken circle") == count("a broken circle", None)


def test_ti_hashes_are_the_files_short_sha256(sd, library):
    extra, warnings = {}, []
    embeds(sd, "a1111red diffred evil", library).record(extra, warnings)
    embeds(sd, "a1111red safered", library).record(extra, warnings)  # a second pass (hires) adds its own
    digests = {name: hashlib.sha256((library.models_dir / "embeddings" / path).read_bytes()).hexdigest()[:10]
               for name, path in [("a1111red", "a1111red.pt"), ("diffred", "diffred.bin"),
                                  ("safered", "sub/safered.safetensors")]}
    assert str(extra["TI hashes"]) == ", ".join(f"{n}: {digests[n]}" for n in ("a1111red", "diffred", "safered"))
    assert len(warnings) == 1 and "evil" in warnings[0]


def test_engine_writes_ti_hashes_and_reports_refused_files(registry, library, tmp_path):
    engine = Engine(registry, OutputWriter(tmp_path / "outputs"))
    engine.embeddings = library
    request = GenerationRequest(prompt="a a1111red circle, broken", model="tiny-sd", width=64, height=64, steps=2,
                                seed=3)
    result = engine.generate(request)
    params = parse_infotext(result.infotexts[0])[2]
    assert params["TI hashes"].startswith("a1111red: ") and len(params["TI hashes"]) == len("a1111red: ") + 10
    assert any("'broken'" in warning for warning in result.warnings)
    plain = engine.generate(replace(request, prompt="a red circle, broken"))
    assert "TI hashes" not in parse_infotext(plain.infotexts[0])[2]


def test_listing_is_a1111s_embeddings_response(library):
    listing = library.listing(expected_shape=8)
    assert set(listing["loaded"]) == {"a1111red", "safered", "diffred"}
    assert set(listing["skipped"]) == {"xlred", "narrow"}
    assert listing["loaded"]["a1111red"] == {"step": 500, "sd_checkpoint": "abc123", "sd_checkpoint_name": "tiny",
                                             "shape": 8, "vectors": 1}
    assert listing["loaded"]["safered"]["vectors"] == 2 and listing["skipped"]["xlred"]["shape"] == 16


def test_api_lists_embeddings_for_the_current_model(models_dir, library, api_client):
    client, services = api_client(models_dir, default_model="tiny-sdxl")
    services.engine.embeddings = library
    body = client.get("/sdapi/v1/embeddings").json()
    assert set(body["loaded"]) == {"xlred"} and body["loaded"]["xlred"]["shape"] == 16
    assert {"a1111red", "narrow"} <= set(body["skipped"])
