"""Prompt embeddings as A1111 makes them, on the tiny SD and SDXL pipelines: chunks, weights, clip skip, cache."""

import numpy as np
import pytest
import torch

from pipelines.errors import RequestError
from pipelines.generate import run_pipeline
from pipelines.request import GenerationRequest
from pipelines.text_encoding import _Matcher, encode_prompts, text_encoders_changed, tokenize
from training.tiny_random import build_tiny_sd


def chunks_of(pipe, prompt):
    return tokenize(pipe.tokenizer, prompt, _Matcher(None, pipe.tokenizer, [], []))


def ids(pipe, text):
    return pipe.tokenizer(text, add_special_tokens=False).input_ids


def test_plain_prompts_give_exactly_diffusers_embeddings(sd, sdxl):
    ours = encode_prompts(sd, "a red circle, on white", "blurry").kwargs
    theirs = sd.encode_prompt("a red circle, on white", "cpu", 1, True, "blurry")
    assert torch.equal(ours["prompt_embeds"], theirs[0]) and torch.equal(ours["negative_prompt_embeds"], theirs[1])
    for negative in ("", "blurry"):  # an empty SDXL negative is zeros, as diffusers makes it
        ours = encode_prompts(sdxl, "a red circle", negative).kwargs
        theirs = sdxl.encode_prompt("a red circle", device="cpu", negative_prompt=negative or None)
        keys = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
        assert all(torch.equal(ours[k], t) for k, t in zip(keys, theirs))


@pytest.mark.parametrize("name", ["sd", "sdxl"])
def test_plain_prompt_pictures_equal_a_bare_diffusers_call(name, request):
    pipe = request.getfixturevalue(name)
    req = GenerationRequest(prompt="a red circle", negative_prompt="blue", width=64, height=64, steps=3, seed=5)
    ours = run_pipeline(pipe, req, [5])[0]
    bare = pipe(prompt="a red circle", negative_prompt="blue", width=64, height=64, num_inference_steps=3,
                guidance_scale=7.0, generator=[torch.Generator("cpu").manual_seed(5)]).images[0]
    assert np.array_equal(np.asarray(ours), np.asarray(bare))


def test_long_prompts_split_into_chunks_of_75(sd):
    chunks = chunks_of(sd, " ".join(["cat"] * 100))
    assert [len(c.tokens) for c in chunks] == [75, 25]
    embeds = encode_prompts(sd, " ".join(["cat"] * 100), "").kwargs
    assert embeds["prompt_embeds"].shape == (1, 154, 8)


def test_comma_back_off_moves_the_text_after_a_near_comma(sd):
    near = " ".join(["cat"] * 70) + ", " + " ".join(["dog"] * 10)  # comma at token 70: within 20 of the end
    chunks = chunks_of(sd, near)
    assert [len(c.tokens) for c in chunks] == [71, 10] and chunks[0].tokens[-1] == ids(sd, ",")[0]
    far = " ".join(["cat"] * 10) + ", " + " ".join(["dog"] * 70)  # comma at token 10: too far back
    assert [len(c.tokens) for c in chunks_of(sd, far)] == [75, 6]


def test_break_starts_a_new_chunk(sd):
    chunks = chunks_of(sd, "a red circle BREAK a blue square")
    assert [c.tokens for c in chunks] == [ids(sd, "a red circle"), ids(sd, "a blue square")]
    assert encode_prompts(sd, "a red circle BREAK a blue square", "").kwargs["prompt_embeds"].shape[1] == 154


def test_the_token_counter_counts_as_the_encoder_chunks(sd):
    """A1111's counter: tokens without syntax or tags, out of the room of the chunks they fill (a comma moving text
    on, or BREAK, opens a chunk early), the longest text of a prompt edit or part of an AND."""
    from pipelines.text_encoding import token_count

    counted = {prompt: token_count(sd.tokenizer, prompt, 20) for prompt in (
        "", "(a red:1.3) circle <lora:x:0.5>", " ".join(["cat"] * 100), " ".join(["cat"] * 70) + ", " + "dog " * 10,
        "a red circle BREAK a blue square", "a [red:big blue:5] circle", "a [red:big blue:30] circle",
        "a red circle AND a big blue square:0.5")}
    assert list(counted.values()) == [(0, 75), (3, 75), (100, 150), (81, 150), (6, 150), (4, 75), (3, 75), (4, 75)]


def test_weights_follow_the_attention_syntax_and_tags_are_removed(sd):
    [chunk] = chunks_of(sd, "a (red:1.5) [circle] (on) white <lora:style:0.5>")
    assert chunk.tokens == ids(sd, "a red circle on white")
    assert chunk.weights == pytest.approx([1.0, 1.5, 1 / 1.1, 1.1, 1.0])


def test_negative_prompt_is_padded_with_empty_chunks(sd):
    long = " ".join(["cat"] * 100)
    empty = encode_prompts(sd, "", "").kwargs["prompt_embeds"]
    for prompt, negative in ((long, "blurry"), ("blurry", long)):
        kwargs = encode_prompts(sd, prompt, negative).kwargs
        assert kwargs["prompt_embeds"].shape == kwargs["negative_prompt_embeds"].shape == (1, 154, 8)
    short = encode_prompts(sd, long, "blurry").kwargs["negative_prompt_embeds"]
    assert torch.equal(short[:, :77], encode_prompts(sd, "blurry", "").kwargs["prompt_embeds"])
    assert torch.equal(short[:, 77:], empty)


def test_emphasis_scales_the_token_and_restores_the_chunk_mean(sd):
    plain = encode_prompts(sd, "a red circle", "").kwargs["prompt_embeds"][0]
    weighted = encode_prompts(sd, "a (red:1.5) circle", "").kwargs["prompt_embeds"][0]
    assert weighted.mean().item() == pytest.approx(plain.mean().item(), rel=1e-5, abs=1e-7)
    scale = weighted[1] / plain[1]  # BOS, a, red, circle: "a" keeps its vector up to the common rescale
    factor = scale.mean()
    assert torch.allclose(scale, factor.expand_as(scale), rtol=1e-4)
    assert torch.allclose(weighted[2] / plain[2], (1.5 * factor).expand(8), rtol=1e-4)
    up = encode_prompts(sd, "a (red) circle", "").kwargs["prompt_embeds"][0]
    down = encode_prompts(sd, "a [red] circle", "").kwargs["prompt_embeds"][0]
    assert not torch.equal(up, plain) and not torch.equal(down, plain) and not torch.equal(up, down)


def test_clip_skip_takes_an_earlier_layer_through_the_final_norm(sd):
    two = encode_prompts(sd, "a red circle", "", clip_skip=2).kwargs["prompt_embeds"]
    tokens = sd.tokenizer("a red circle", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = sd.text_encoder(tokens, output_hidden_states=True).hidden_states[-2]
        assert torch.equal(two, sd.text_encoder.final_layer_norm(hidden))
    assert not torch.equal(two, encode_prompts(sd, "a red circle", "").kwargs["prompt_embeds"])
    with pytest.raises(RequestError, match="Clip skip 12"):
        encode_prompts(sd, "a red circle", "", clip_skip=12)


def test_sdxl_long_weighted_prompt_concatenates_both_encoders(sdxl):
    long = "a (red:1.3) circle, " + " ".join(["cat"] * 90)
    kwargs = encode_prompts(sdxl, long, "blurry").kwargs
    assert kwargs["prompt_embeds"].shape == kwargs["negative_prompt_embeds"].shape == (1, 154, 16)
    assert kwargs["pooled_prompt_embeds"].shape == (1, 8)
    first = encode_prompts(sdxl, "a (red:1.3) circle, " + " ".join(["cat"] * 71), "").kwargs
    assert torch.equal(first["pooled_prompt_embeds"], kwargs["pooled_prompt_embeds"])  # from the first chunk


def test_cache_returns_earlier_encodings_until_the_text_encoder_changes():
    pipe = build_tiny_sd(seed=3)
    first = encode_prompts(pipe, "a red circle", "").kwargs["prompt_embeds"]
    assert encode_prompts(pipe, "a red circle", "").kwargs["prompt_embeds"] is first
    with torch.no_grad():
        pipe.text_encoder.final_layer_norm.weight.mul_(2)  # as a LoRA on the text encoder would change it
    text_encoders_changed(pipe)
    again = encode_prompts(pipe, "a red circle", "").kwargs["prompt_embeds"]
    assert again is not first and not torch.equal(again, first)


def test_switching_a_text_encoder_lora_is_seen_by_the_cache():
    from diffusers.utils.peft_utils import set_weights_and_activate_adapters
    from peft import LoraConfig

    pipe = build_tiny_sd(seed=4)
    plain = encode_prompts(pipe, "a red circle", "").kwargs["prompt_embeds"]
    pipe.text_encoder.add_adapter(LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
                                  adapter_name="style")
    encodings = {}
    for weight in (1.0, 0.5, 1.0):
        set_weights_and_activate_adapters(pipe.text_encoder, ["style"], [weight])
        encodings.setdefault(weight, []).append(encode_prompts(pipe, "a red circle", "").kwargs["prompt_embeds"])
    assert not torch.equal(encodings[1.0][0], plain) and not torch.equal(encodings[1.0][0], encodings[0.5][0])
    assert encodings[1.0][1] is encodings[1.0][0]
    set_weights_and_activate_adapters(pipe.text_encoder, [], [])  # every adapter off: the plain encoding again
    assert encode_prompts(pipe, "a red circle", "").kwargs["prompt_embeds"] is plain
