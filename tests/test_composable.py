"""A1111's composable diffusion (``a AND b:0.5``): the parts and weights read as A1111 reads them, each part's
encoding in its own share of the UNet's batch (SDXL's pooled text too, prompt edits and the refiner's switch
followed), and the predictions combined as A1111 combines them (tiny models; the embedded model's meaning is in
test_embedded_model.py)."""

import pytest
import torch
from PIL import Image

from pipelines.generate import run_pipeline
from pipelines.prompts import composable_parts
from pipelines.request import GenerationRequest
from pipelines.text_encoding import encode_prompts
from unet_calls import UNetCalls


@pytest.mark.parametrize("prompt, parts", [
    ("a red circle", [("a red circle", 1.0)]),
    ("a castle AND a dragon:0.7", [("a castle", 1.0), (" a dragon", 0.7)]),
    ("a cat:0.5", [("a cat", 0.5)]),  # one part with a weight, as in A1111
    ("x : 1.5 AND y:-.5 AND z", [("x", 1.5), (" y", -0.5), (" z", 1.0)]),
    ("(a cat:1.2) AND [dog]", [("(a cat:1.2)", 1.0), (" [dog]", 1.0)]),  # emphasis stays emphasis
    ("BRANDY and ANDY", [("BRANDY and ANDY", 1.0)]),  # a whole word, in capitals
    ("a AND ", [("a", 1.0), ("", 1.0)]),
])
def test_parts_and_weights_are_read_as_a1111_reads_them(prompt, parts):
    assert composable_parts(prompt) == parts


def make(**values):
    return GenerationRequest(**{"prompt": "a red circle", "negative_prompt": "dark", "model": "tiny-sd", "width": 64,
                                "height": 64, "steps": 4, "seed": 7, "sampler": "Euler", **values})


def encoded(engine, model: str, prompt: str, key: str = "prompt_embeds") -> torch.Tensor:
    with engine.registry.lease(model) as loaded:
        return encode_prompts(loaded.pipe, prompt, "dark").kwargs[key]


def latents(engine, **values) -> torch.Tensor:
    request = make(**values)
    with engine.registry.lease(request.model) as loaded:
        return run_pipeline(loaded.pipe, request, [request.seed], latent_output=True)


@pytest.mark.parametrize("task, calls", [("txt2img", 4), ("img2img", 2), ("inpaint", 2)])
def test_each_part_has_its_share_of_the_batch(engine, task, calls):
    """One UNet call a step, on the negative prompt, then each part's encoding; the pipeline's UNet is its own
    again afterwards."""
    picture = {} if task == "txt2img" else {"init_image": Image.new("RGB", (64, 64), "red"), "denoising_strength": 0.5}
    if task == "inpaint":
        picture["mask"] = Image.new("L", (64, 64), 255)
    with UNetCalls(engine, "tiny-sd") as seen:
        engine.generate(make(prompt="a red circle AND a blue square:0.5", task=task, **picture))
    expected = torch.cat([encoded(engine, "tiny-sd", "a red circle", key) for key in
                          ("negative_prompt_embeds", "prompt_embeds")] + [encoded(engine, "tiny-sd", " a blue square")])
    seen = seen["tiny-sd"]
    assert len(seen) == calls and all(torch.equal(call["encoder_hidden_states"], expected) for call in seen)
    assert all(torch.equal(call["sample"][1], call["sample"][2]) for call in seen)  # one picture, once per part
    with engine.registry.lease("tiny-sd") as loaded:
        assert type(loaded.pipe.unet).__name__ == "UNet2DConditionModel"


def test_predictions_combine_as_a1111_combines_them(engine):
    """uncond + scale x sum(weight x (cond - uncond)): one part at weight 0.5 and scale 14 is the part at 7, a part
    at weight 0 changes nothing, two halves of one text are the text; without CFG the weighted sum."""
    plain = latents(engine)
    torch.testing.assert_close(latents(engine, prompt="a red circle:0.5", cfg_scale=14), plain)
    torch.testing.assert_close(latents(engine, prompt="a red circle AND a blue square:0"), plain)
    torch.testing.assert_close(latents(engine, prompt="a red circle:0.5 AND a red circle:0.5"), plain)
    torch.testing.assert_close(latents(engine, prompt="a red circle:0.5 AND a red circle:0.5", cfg_scale=1),
                               latents(engine, cfg_scale=1))
    assert not torch.allclose(latents(engine, prompt="a red circle AND a blue square"), plain)


def test_sdxl_gets_each_parts_pooled_text(engine):
    with UNetCalls(engine, "tiny-sdxl") as calls:
        engine.generate(make(model="tiny-sdxl", prompt="a red circle AND a blue square", steps=2))
    pooled = [encoded(engine, "tiny-sdxl", text, "pooled_prompt_embeds") for text in ("a red circle", " a blue square")]
    for call in calls["tiny-sdxl"]:
        added = call["added_cond_kwargs"]
        assert torch.equal(added["text_embeds"][1:], torch.cat(pooled))
        assert added["time_ids"].shape[0] == 3 and torch.equal(added["time_ids"][1], added["time_ids"][2])


def test_a_part_follows_its_prompt_edits(engine):
    with UNetCalls(engine, "tiny-sd") as calls:
        engine.generate(make(prompt="a [red:blue:0.5] circle AND a square"))
    parts = [[encoded(engine, "tiny-sd", text) for text in (first, " a square")]
             for first in ("a red circle", "a blue circle")]
    assert [torch.equal(call["encoder_hidden_states"][1:], torch.cat(parts[step >= 2]))
            for step, call in enumerate(calls["tiny-sd"])] == [True] * 4


def test_parts_of_different_lengths_are_padded_alike(sd):
    """A long part and a short one (and the negative prompt) fill the same number of chunks."""
    text = encode_prompts(sd, " ".join(["cat"] * 100) + " AND a dog:0.5", "blurry")
    assert [weight for weight, _, _ in text.parts] == [1.0, 0.5]
    assert {embeds.shape for _, embeds, _ in text.parts} == {text.kwargs["negative_prompt_embeds"].shape} == {
        (1, 154, 8)}
    assert encode_prompts(sd, "a dog", "blurry").parts == ()  # no parts, no weight: the plain path
