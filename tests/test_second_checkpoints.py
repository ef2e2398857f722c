"""A second model in a job: the refiner (takes over a pass at "switch at") and hires fix's own checkpoint.

A models folder of its own: tiny-sd, tiny-sd-other (other weights), tiny-sd-deep (an autoencoder of another shape:
its latents are not tiny-sd's), tiny-sdxl and tiny-sdxl-refiner (laid out as SDXL's refiner: one text encoder,
aesthetic scores among its size ids).
"""

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.errors import RequestError
from pipelines.refiner import switch_step
from pipelines.request import GenerationRequest
from pipelines.text_encoding import encode_prompts
from unet_calls import UNetCalls


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter
    from pipelines.registry import Registry
    from training.tiny_random import _vae, build_tiny_sd, build_tiny_sdxl, build_tiny_sdxl_refiner

    root = tmp_path_factory.mktemp("models")
    folder = root / "Stable-diffusion"
    deep = build_tiny_sd(seed=2)
    deep.vae = _vae(levels=3)  # latents a quarter of the picture's side, where tiny-sd's are half
    for name, pipe in (("tiny-sd", build_tiny_sd()), ("tiny-sd-other", build_tiny_sd(seed=1)), ("tiny-sd-deep", deep),
                       ("tiny-sdxl", build_tiny_sdxl()), ("tiny-sdxl-refiner", build_tiny_sdxl_refiner())):
        pipe.save_pretrained(folder / name)
    return Engine(Registry(root), OutputWriter(tmp_path_factory.mktemp("out"), enabled=False))


def make(**values):
    return GenerationRequest(**{"prompt": "a red circle", "negative_prompt": "blue", "model": "tiny-sd", "width": 64,
                                "height": 64, "steps": 10, "seed": 7, "sampler": "Euler", **values})


def pixels(result, index: int = 0):
    return np.asarray(result.images[index], dtype=np.int16)


def test_the_switch_comes_once_the_share_of_steps_is_done():
    assert [switch_step(20, at) for at in (0.8, 0.01, 0.5, 0.96, 1.0)] == [16, 1, 10, None, None]
    assert switch_step(3, 0.34) == 2 and switch_step(10, 0.3) == 3  # 0.3 x 10 is 3.0000000000000004 in floats


def test_the_refiner_takes_over_with_its_own_text_conditioning(engine):
    """After 6 of 10 steps the refiner's UNet runs, fed the refiner's own encoding of the prompts (negative first,
    as the pipeline batches them); the picture is neither model's own, and the infotext says who refined."""
    with UNetCalls(engine, "tiny-sd", "tiny-sd-other") as calls:
        refined = engine.generate(make(refiner_checkpoint="tiny-sd-other", refiner_switch_at=0.6))
    assert (len(calls["tiny-sd"]), len(calls["tiny-sd-other"])) == (6, 4)
    with engine.registry.lease("tiny-sd-other") as other:
        text = encode_prompts(other.pipe, "a red circle", "blue")
    expected = torch.cat([text.kwargs["negative_prompt_embeds"], text.kwargs["prompt_embeds"]])
    assert all(torch.equal(call["encoder_hidden_states"], expected) for call in calls["tiny-sd-other"])
    assert "Refiner: tiny-sd-other [" in refined.infotexts[0] and "Refiner switch at: 0.6," in refined.infotexts[0]
    plain, theirs = engine.generate(make()), engine.generate(make(model="tiny-sd-other"))
    assert np.abs(pixels(refined) - pixels(plain)).mean() > 0.5 and np.abs(pixels(refined) - pixels(theirs)).mean() > 5
    with engine.registry.lease("tiny-sd") as model:
        assert model.pipeline("txt2img").unet is model.pipe.unet  # its own UNet back after the pass
    again = engine.generate(GenerationRequest.from_infotext(refined.infotexts[0], model="tiny-sd"))
    assert np.array_equal(pixels(again), pixels(refined))  # read back from the infotext's "name [hash]"


def test_a_refiner_that_never_switches_or_is_the_model_itself_changes_nothing(engine):
    plain = engine.generate(make())
    for values in ({"refiner_checkpoint": "tiny-sd-other", "refiner_switch_at": 1.0},
                   {"refiner_checkpoint": "tiny-sd", "refiner_switch_at": 0.5}):
        refined = engine.generate(make(**values))
        assert np.array_equal(pixels(refined), pixels(plain)), values
        assert ("Refiner: " in refined.infotexts[0]) == (values["refiner_switch_at"] < 1)


def test_sdxls_refiner_gets_its_aesthetic_score_ids_and_a_batch_equals_single_runs(engine):
    with UNetCalls(engine, "tiny-sdxl-refiner") as calls:
        batch = engine.generate(make(model="tiny-sdxl", refiner_checkpoint="tiny-sdxl-refiner", batch_size=2))
    assert len(calls["tiny-sdxl-refiner"]) == 2  # steps 9 and 10 of 10 at 0.8
    added = calls["tiny-sdxl-refiner"][0]["added_cond_kwargs"]
    assert added["time_ids"].tolist() == [[64, 64, 0, 0, 2.5]] * 2 + [[64, 64, 0, 0, 6.0]] * 2
    assert added["text_embeds"].shape == (4, 8)  # the refiner's pooled text, negative and positive per image
    assert calls["tiny-sdxl-refiner"][0]["encoder_hidden_states"].shape[-1] == 8  # its one text encoder's width
    for index, seed in enumerate(batch.seeds):
        single = engine.generate(make(model="tiny-sdxl", refiner_checkpoint="tiny-sdxl-refiner", seed=seed))
        assert np.abs(pixels(batch, index) - pixels(single)).max() <= 2  # a batch computes in another order


def test_img2img_is_refined_and_hires_fix_refines_its_second_pass_only(engine):
    init = Image.new("RGB", (64, 64), "red")
    with UNetCalls(engine, "tiny-sd", "tiny-sd-other") as calls:
        engine.generate(make(task="img2img", init_image=init, denoising_strength=0.8,
                             refiner_checkpoint="tiny-sd-other", refiner_switch_at=0.5))
    assert (len(calls["tiny-sd"]), len(calls["tiny-sd-other"])) == (4, 4)  # 10 x 0.8 steps run
    with UNetCalls(engine, "tiny-sd", "tiny-sd-other") as calls:
        engine.generate(make(enable_hr=True, hr_scale=1.5, hr_second_pass_steps=4, denoising_strength=0.5,
                             refiner_checkpoint="tiny-sd-other", refiner_switch_at=0.5))
    assert (len(calls["tiny-sd"]), len(calls["tiny-sd-other"])) == (10 + 2, 2)


def test_refiners_that_cannot_take_over_are_refused_by_name(engine):
    for values, message in (({"refiner_checkpoint": "nope"}, "Unknown model 'nope'"),
                            ({"refiner_checkpoint": "tiny-sdxl-refiner"}, "must be of the same family"),
                            ({"refiner_checkpoint": "tiny-sd-deep"}, "the same latents"),
                            ({"model": "tiny-sdxl", "refiner_checkpoint": "tiny-sd"}, "must be of the same family"),
                            ({"refiner_checkpoint": "tiny-sd-other", "refiner_switch_at": 0}, "over 0")):
        with pytest.raises(RequestError, match=message) as refused:
            engine.generate(make(**values))
        assert refused.value.field in ("refiner_checkpoint", "refiner_switch_at")
    assert make(refiner_checkpoint="None").refiner_checkpoint == ""  # A1111's word for none


@pytest.mark.parametrize("checkpoint, upscaler", [("tiny-sd-other", "Latent"), ("tiny-sd-deep", "Latent"),
                                                  ("tiny-sd-deep", "Lanczos")])
def test_hires_fix_runs_its_second_pass_on_its_own_checkpoint(engine, checkpoint, upscaler):
    """tiny-sd-deep's autoencoder is of another shape: latents go over to it through pictures."""
    values = dict(enable_hr=True, hr_scale=1.5, hr_upscaler=upscaler, denoising_strength=0.5)
    with UNetCalls(engine, "tiny-sd", checkpoint) as calls:
        other = engine.generate(make(hr_checkpoint_name=checkpoint, **values))
    assert (len(calls["tiny-sd"]), len(calls[checkpoint])) == (10, 5)
    assert other.images[0].size == (96, 96) and calls[checkpoint][0]["sample"].shape[-1] == 96 // (
        4 if checkpoint == "tiny-sd-deep" else 2)
    assert f"Hires checkpoint: {checkpoint} [" in other.infotexts[0]
    same = engine.generate(make(**values))
    assert np.abs(pixels(other) - pixels(same)).mean() > 5 and "Hires checkpoint" not in same.infotexts[0]
    again = engine.generate(GenerationRequest.from_infotext(other.infotexts[0], model="tiny-sd"))
    assert np.array_equal(pixels(again), pixels(other))
    assert make(hr_checkpoint_name="Use same checkpoint").hr_checkpoint_name == ""


def test_a_hires_checkpoint_that_is_not_there_is_refused_before_any_pass(engine):
    with UNetCalls(engine, "tiny-sd") as calls, pytest.raises(RequestError, match="Unknown model") as refused:
        engine.generate(make(enable_hr=True, hr_checkpoint_name="nope"))
    assert refused.value.field == "hr_checkpoint_name" and not calls["tiny-sd"]


def test_composable_parts_go_on_in_the_refiner(engine):
    """After the switch the refiner's UNet gets each part in the refiner's own encoding."""
    with UNetCalls(engine, "tiny-sd", "tiny-sd-other") as calls:
        engine.generate(make(prompt="a red circle AND a blue square", refiner_checkpoint="tiny-sd-other",
                             refiner_switch_at=0.6))
    assert (len(calls["tiny-sd"]), len(calls["tiny-sd-other"])) == (6, 4)
    for model in ("tiny-sd", "tiny-sd-other"):
        with engine.registry.lease(model) as loaded:
            parts = [encode_prompts(loaded.pipe, text, "blue").kwargs["prompt_embeds"]
                     for text in ("a red circle", " a blue square")]
        assert all(torch.equal(call["encoder_hidden_states"][1:], torch.cat(parts)) for call in calls[model])
