"""A1111's prompt editing: ``[from:to:when]``, ``[to:when]``, ``[from::when]`` and ``[a|b]``, read into a schedule
of texts, and a pass that conditions each step on its text (tiny models: which encoding each UNet call gets)."""

import numpy as np
import pytest
import torch

from pipelines.prompts import prompt_schedule
from pipelines.request import GenerationRequest
from pipelines.text_encoding import encode_prompts
from unet_calls import UNetCalls


@pytest.mark.parametrize("prompt, steps, schedule", [
    ("a [cat:dog:0.5] on grass", 20, [(10, "a cat on grass"), (20, "a dog on grass")]),
    ("a [cat:dog:10]", 20, [(10, "a cat"), (20, "a dog")]),
    ("[fancy:5] house", 20, [(5, " house"), (20, "fancy house")]),  # added after step 5
    ("a [red::3] car", 20, [(3, "a red car"), (20, "a  car")]),  # removed after step 3
    ("[a|b|c] x", 4, [(1, "a x"), (2, "b x"), (3, "c x"), (4, "a x")]),
    ("(a [x:y:2]:1.2) and [z]", 20, [(2, "(a x:1.2) and [z]"), (20, "(a y:1.2) and [z]")]),  # emphasis kept as text
    ("[[a:b:2]:c:4]", 20, [(2, "a"), (4, "b"), (20, "c")]),  # nested
    ("[a:b:0]", 20, [(20, "b")]),
    ("[a:b:1.0]", 20, [(20, "a")]),  # all of the steps
    ("[a:b:99]", 20, [(20, "a")]),
    ("plain [word] and (more:1.3)", 20, [(20, "plain [word] and (more:1.3)")]),
    ("[a:b] [c:d:e] [cat:dog:0.5", 20, [(20, "[a:b] [c:d:e] [cat:dog:0.5")]),  # not edits: text
    ("\\[not:this:1\\] a ] b )", 20, [(20, "\\[not:this:1\\] a ] b )")]),
    ("<lora:x:0.8> [a:b:0.5]", 20, [(10, "<lora:x:0.8> a"), (20, "<lora:x:0.8> b")]),
    ("", 20, [(20, "")]),
])
def test_prompt_schedules_follow_a1111(prompt, steps, schedule):
    assert prompt_schedule(prompt, steps) == schedule


def make(**values):
    return GenerationRequest(**{"prompt": "a red circle", "model": "tiny-sd", "width": 64, "height": 64, "steps": 10,
                                "seed": 7, "sampler": "Euler", **values})


def conditioned(engine, model: str, request: GenerationRequest) -> list[torch.Tensor]:
    with UNetCalls(engine, model) as calls:
        engine.generate(request)
    return [call["encoder_hidden_states"] for call in calls[model]]


def encoding(engine, model: str, prompt: str, negative: str = "") -> torch.Tensor:
    with engine.registry.lease(model) as loaded:
        text = encode_prompts(loaded.pipe, prompt, negative).kwargs
    return torch.cat([text["negative_prompt_embeds"], text["prompt_embeds"]])


def test_each_step_is_conditioned_on_its_text(engine):
    seen = conditioned(engine, "tiny-sd", make(prompt="a [red circle:blue square:0.3]"))
    red, blue = encoding(engine, "tiny-sd", "a red circle"), encoding(engine, "tiny-sd", "a blue square")
    assert [torch.equal(s, red) for s in seen] == [True] * 3 + [False] * 7
    assert all(torch.equal(s, blue) for s in seen[3:])
    alternating = conditioned(engine, "tiny-sd", make(prompt="a [red|blue] circle", negative_prompt="[dark::0.5]"))
    for step in range(1, 11):
        prompt, negative = "a red circle" if step % 2 else "a blue circle", "dark" if step <= 5 else ""
        assert torch.equal(alternating[step - 1], encoding(engine, "tiny-sd", prompt, negative)), step


def test_an_edit_changes_the_picture_between_its_texts(engine):
    def picture(prompt: str):
        return np.asarray(engine.generate(make(prompt=prompt)).images[0], dtype=np.int16)

    edited, first, second = picture("[a red circle:a blue square:2]"), picture("a red circle"), picture("a blue square")
    assert np.abs(edited - first).mean() > 0.2 and np.abs(edited - second).mean() > 0.2  # 0.44 and 2.5
    assert np.array_equal(picture("[a red circle:a blue square:10]"), first)  # the last step: never switches


def test_sdxl_gets_its_pooled_text_edited_too(engine):
    with UNetCalls(engine, "tiny-sdxl") as calls:
        engine.generate(make(model="tiny-sdxl", prompt="[a red circle:a blue square:0.5]", steps=4))
    with engine.registry.lease("tiny-sdxl") as loaded:
        pooled = [encode_prompts(loaded.pipe, prompt, "").kwargs["pooled_prompt_embeds"]
                  for prompt in ("a red circle", "a blue square")]
    seen = [call["added_cond_kwargs"]["text_embeds"][1:] for call in calls["tiny-sdxl"]]  # the positive half
    assert [torch.equal(s, pooled[0]) for s in seen] == [True, True, False, False]
    assert all(torch.equal(s, pooled[1]) for s in seen[2:])


def test_img2img_edits_over_the_steps_it_runs(engine):
    from PIL import Image

    seen = conditioned(engine, "tiny-sd", make(prompt="[a red circle:a blue square:0.5]", task="img2img",
                                               init_image=Image.new("RGB", (64, 64), "red"), denoising_strength=0.4))
    red = encoding(engine, "tiny-sd", "a red circle")
    assert [torch.equal(s, red) for s in seen] == [True, True, False, False]  # 4 of 10 steps run: 2 and 2
