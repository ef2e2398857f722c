"""Step caching (pipelines/step_cache.py): the shallow path is exact given the same deep features, full calls come
every N-th call, ControlNet and SDXL's added conditions pass through, nothing is left behind, and the request,
infotext and API carry it."""

from types import SimpleNamespace

import pytest
import torch

from api.payloads import Txt2ImgPayload, to_requests
from pipelines import step_cache
from pipelines.config import Config
from pipelines.errors import RequestError
from pipelines.request import GenerationRequest
from training.tiny_random import build_tiny_controlnet


def unet_inputs(pipe, batch: int = 2) -> dict:
    """A CFG-sized batch of UNet inputs (with SDXL's added conditions when the UNet takes them)."""
    unet, g = pipe.unet, torch.Generator().manual_seed(0)
    size = 8
    inputs = {"sample": torch.randn(batch, 4, size, size, generator=g), "timestep": torch.tensor(500),
              "encoder_hidden_states": torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g)}
    if unet.config.addition_embed_type == "text_time":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        inputs["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, pooled, generator=g),
                                       "time_ids": torch.tensor([[64, 64, 0, 0, 64, 64]] * batch).float()}
    return inputs


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd+controlnet"])
def test_cheap_call_on_the_same_inputs_equals_the_full_one(family, sd, sdxl):
    pipe = sdxl if family == "sdxl" else sd
    inputs = unet_inputs(pipe)
    if family == "sd+controlnet":
        net = build_tiny_controlnet(sd)
        down, mid = net(inputs["sample"], 500, inputs["encoder_hidden_states"],
                        controlnet_cond=torch.rand(2, 3, 8 * sd.vae_scale_factor, 8 * sd.vae_scale_factor),
                        return_dict=False)
        inputs.update(down_block_additional_residuals=down, mid_block_additional_residual=mid)
    with torch.no_grad():
        plain = pipe.unet(**inputs).sample
        with step_cache.cached(pipe, 2):
            full, cheap = pipe.unet(**inputs).sample, pipe.unet(**inputs).sample
        after = pipe.unet(**inputs).sample
    torch.testing.assert_close(full, plain, rtol=0, atol=0)
    torch.testing.assert_close(cheap, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after, plain, rtol=0, atol=0)
    assert not any("forward" in m.__dict__ for m in pipe.unet.modules())  # hooks and stubs all gone


def test_deep_blocks_run_every_nth_call_only(sd):
    ran = []
    handle = sd.unet.mid_block.resnets[0].register_forward_hook(lambda *_: ran.append(len(calls)))
    calls = []
    try:
        with torch.no_grad(), step_cache.cached(sd, 3):
            for _ in range(7):
                calls.append(sd.unet(**unet_inputs(sd)).sample)
            calls.append(sd.unet(**unet_inputs(sd, batch=1)).sample)
    finally:
        handle.remove()
    assert ran == [0, 3, 6, 7]  # a changed shape (the last call) forces a full call


def test_engine_labels_it_and_leaves_no_residue(engine):
    request = GenerationRequest(prompt="a red circle", steps=4, width=64, height=64, seed=3)
    before = engine.generate(request, save=False)
    cached = engine.generate(GenerationRequest(**{**request.__dict__, "step_cache": 2}), save=False)
    after = engine.generate(request, save=False)
    assert "Step cache: 2" in cached.infotexts[0] and "Step cache" not in before.infotexts[0]
    assert list(after.images[0].getdata()) == list(before.images[0].getdata())
    assert list(cached.images[0].getdata()) != list(before.images[0].getdata())
    assert GenerationRequest.from_infotext(cached.infotexts[0]).step_cache == 2


def test_request_api_and_refusal():
    with pytest.raises(RequestError, match="Step cache must be between 0 and 10"):
        GenerationRequest(step_cache=11)
    options = SimpleNamespace(services=SimpleNamespace(config=Config()), checkpoint_name=lambda name: "tiny-sd")
    payload = Txt2ImgPayload(prompt="x", width=64, height=64, override_settings={"step_cache": 3})
    assert to_requests(payload, options)[1][0].step_cache == 3
    _, (request,) = to_requests(Txt2ImgPayload(infotext="x\nSteps: 2, Step cache: 4, Size: 64x64"), options)
    assert request.step_cache == 4
    with pytest.raises(RequestError, match="UNet models"):
        with step_cache.cached(SimpleNamespace(transformer=object()), 3):
            pass
