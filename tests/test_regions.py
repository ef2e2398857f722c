"""Regional Prompter (the extension's Matrix mode, Latent): the prompt's cells and the divide ratio read as the
extension reads them, each cell's part guiding its area alone, the infotext and API keys (tiny models; the
embedded model's meaning is in test_embedded_model.py)."""

import pytest
import torch

from pipelines.composable import ComposedUNet
from pipelines.errors import RequestError
from pipelines.generate import run_pipeline
from pipelines.regions import Area, RegionalSettings
from pipelines.request import GenerationRequest
from pipelines.text_encoding import encode_prompts
from unet_calls import UNetCalls

THIRD = 1 / 3


def regions(prompt: str, splitting="Columns", ratios="1,1", base_ratios="0.2", use_base=False, use_common=False):
    """(text, [(box, weight), ...]) of each part; a plain part's weight as it is."""
    settings = RegionalSettings.checked(splitting, ratios, base_ratios, use_base, use_common)
    return [(text, list(weight.boxes) if isinstance(weight, Area) else weight)
            for text, weight in settings.parts(prompt)]


@pytest.mark.parametrize("prompt, settings, parts", [
    ("red BREAK blue", {}, [("red", [((0, 1, 0, .5), 1)]), ("blue", [((0, 1, .5, 1), 1)])]),
    ("red AND blue", {"ratios": "3,1"}, [("red", [((0, 1, 0, .75), 1)]), ("blue", [((0, 1, .75, 1), 1)])]),
    ("red BREAK blue", {"splitting": "Rows", "ratios": "1,3"},
     [("red", [((0, .25, 0, 1), 1)]), ("blue", [((.25, 1, 0, 1), 1)])]),
    ("red BREAK blue", {"splitting": "Vertical"},  # the extension's earlier name of Rows
     [("red", [((0, .5, 0, 1), 1)]), ("blue", [((.5, 1, 0, 1), 1)])]),
    # the extension's README example: a row of three, then a row of two twice as high
    ("sky ADDCOL hair ADDCOL fish ADDROW desk ADDCOL dress", {"ratios": "1,2,1,1;2,4,6"},
     [("sky", [((0, THIRD, 0, .5), 1)]), ("hair", [((0, THIRD, .5, .75), 1)]), ("fish", [((0, THIRD, .75, 1), 1)]),
      ("desk", [((THIRD, 1, 0, .4), 1)]), ("dress", [((THIRD, 1, .4, 1), 1)])]),
    ("a BREAK b BREAK c", {"ratios": "1,1,1;1"},  # BREAKs alone fill a two-dimensional ratio's cells in order
     [("a", [((0, .5, 0, .5), 1)]), ("b", [((0, .5, .5, 1), 1)]), ("c", [((.5, 1, 0, 1), 1)])]),
    ("a ADDROW b", {"ratios": "1,3"},  # rows of one region each: a one-dimensional ratio gives their heights
     [("a", [((0, .25, 0, 1), 1)]), ("b", [((.25, 1, 0, 1), 1)])]),
    ("a BREAK b BREAK c", {"splitting": "Rows", "ratios": "1,1;2;1"},  # Rows: "," between columns, ";" rows
     [("a", [((0, 1, 0, .5), 1)]), ("b", [((0, 2 / 3, .5, 1), 1)]), ("c", [((2 / 3, 1, .5, 1), 1)])]),
    ("scene ADDCOMM red BREAK blue", {}, [("scene, red", [((0, 1, 0, .5), 1)]), ("scene, blue", [((0, 1, .5, 1), 1)])]),
    ("scene BREAK red BREAK blue", {"use_common": True},
     [("scene, red", [((0, 1, 0, .5), 1)]), ("scene, blue", [((0, 1, .5, 1), 1)])]),
    ("field ADDBASE red BREAK blue", {"base_ratios": "0.3"},  # the base: 0.3 everywhere, each cell's text 0.7
     [("field", [((0, 1, 0, .5), .3), ((0, 1, .5, 1), .3)]), ("red", [((0, 1, 0, .5), .7)]),
      ("blue", [((0, 1, .5, 1), .7)])]),
    ("field BREAK red BREAK blue", {"use_base": True, "base_ratios": "0,1"},
     [("field", [((0, 1, 0, .5), 0), ((0, 1, .5, 1), 1)]), ("red", [((0, 1, 0, .5), 1)]),
      ("blue", [((0, 1, .5, 1), 0)])]),
    ("a (red:1.2) circle", {}, [("a (red:1.2) circle", 1.0)]),  # no keyword: the extension stays off
])
def test_cells_and_ratios_are_read_as_the_extension_reads_them(prompt, settings, parts):
    found = regions(prompt, **settings)
    assert [text for text, _ in found] == [text for text, _ in parts]
    for (_, got), (_, wanted) in zip(found, parts):
        assert got == wanted if not isinstance(wanted, list) else [
            (pytest.approx(box), pytest.approx(weight)) for box, weight in got] == wanted


@pytest.mark.parametrize("prompt, settings, field, words", [
    ("a BREAK b BREAK c", {}, "rp_ratios", "makes 2 regions, the prompt has 3"),
    ("a ADDCOL b ADDROW c", {}, "rp_ratios", "rows hold different numbers of regions"),
    ("a BREAK b", {"ratios": "1,x"}, "rp_ratios", "'x', not a number"),
    ("a BREAK b", {"ratios": "1,0"}, "rp_ratios", "over 0"),
    ("a BREAK b", {"splitting": "Random"}, "rp_splitting", "Columns or Rows"),
    ("base ADDBASE a BREAK b", {"base_ratios": "0.1,0.2,0.3"}, "rp_base_ratios", "one per region (2)"),
    ("base ADDBASE a BREAK b", {"base_ratios": "1.5"}, "rp_base_ratios", "between 0 and 1"),
])
def test_a_layout_that_does_not_fit_names_its_field(prompt, settings, field, words):
    values = {"ratios": "1,1", "splitting": "Columns", "base_ratios": "0.2", **settings}
    with pytest.raises(RequestError) as refused:
        GenerationRequest(prompt=prompt, regional_prompter=True, rp_splitting=values["splitting"],
                          rp_ratios=values["ratios"], rp_base_ratios=values["base_ratios"])
    assert refused.value.field == field and words in str(refused.value)


def test_a_layout_is_checked_only_while_it_is_on():
    assert not GenerationRequest(prompt="a BREAK b BREAK c", rp_ratios="1,1").regional_prompter
    with pytest.raises(RequestError):  # the ratio's own grammar is checked whether or not it is on
        GenerationRequest(prompt="a", rp_ratios="one")


def test_an_area_is_cut_on_the_latents_grid():
    area = Area((((0, .5, .25, 1), 0.7),))
    assert torch.equal(area.map(2, 4), torch.tensor([[0, .7, .7, .7], [0, 0, 0, 0]]))
    assert area.map(7, 5).sum().item() == pytest.approx(0.7 * 3 * 4)  # int(7 x .5) rows, 5 - int(5 x .25) columns


class _Echo(torch.nn.Module):
    """A UNet whose prediction at every pixel is its row's text (the mean of its encoder states)."""

    def forward(self, sample, timestep, encoder_hidden_states, added_cond_kwargs=None, return_dict=True, **kwargs):
        return (encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1).expand_as(sample).clone(),)


def test_each_area_takes_its_parts_guidance():
    """uncond + sum(area_i x (cond_i - uncond)) per pixel: the left half guided by the first text alone, the right
    by the second, and the base's share everywhere."""
    texts = [torch.full((1, 2, 3), value) for value in (10.0, 20.0, 30.0)]  # base, left, right
    left, right = (0, 1, 0, .5), (0, 1, .5, 1)
    parts = ((Area(((left, .25), (right, .25))), texts[0], None), (Area(((left, .75),)), texts[1], None),
             (Area(((right, .75),)), texts[2], None))
    composed = ComposedUNet(lambda: (_Echo(), parts), images=1)
    negative, prompted = torch.full((1, 2, 3), 2.0), torch.zeros(1, 2, 3)
    out = composed(torch.zeros(2, 4, 2, 4), 0, torch.cat([negative, prompted]), return_dict=False)[0]
    assert torch.all(out[0] == 2)
    assert torch.allclose(out[1, :, :, :2], torch.tensor(2 + .25 * 8 + .75 * 18))
    assert torch.allclose(out[1, :, :, 2:], torch.tensor(2 + .25 * 8 + .75 * 28))


def make(**values):
    return GenerationRequest(**{"prompt": "a red circle BREAK a blue square", "negative_prompt": "dark",
                                "model": "tiny-sd", "width": 128, "height": 64, "steps": 3, "seed": 7,
                                "sampler": "Euler", "regional_prompter": True, **values})


def latents(engine, **values) -> torch.Tensor:
    request = make(**values)
    with engine.registry.lease(request.model) as loaded:
        return run_pipeline(loaded.pipe, request, [request.seed], latent_output=True)


def test_each_region_is_a_part_of_the_unets_batch(engine):
    with UNetCalls(engine, "tiny-sd") as calls:
        engine.generate(make())
    with engine.registry.lease("tiny-sd") as loaded:
        texts = [encode_prompts(loaded.pipe, text, "dark").kwargs[key] for text, key in
                 (("a red circle", "negative_prompt_embeds"), ("a red circle", "prompt_embeds"),
                  ("a blue square", "prompt_embeds"))]
    assert [torch.equal(call["encoder_hidden_states"], torch.cat(texts)) for call in calls["tiny-sd"]] == [True] * 3


def test_hires_fix_keeps_the_regions_at_its_size(engine):
    with UNetCalls(engine, "tiny-sd") as calls:
        made = engine.generate(make(enable_hr=True, hr_scale=1.5, denoising_strength=0.7))
    sizes = [(call["sample"].shape[0], tuple(call["sample"].shape[-2:])) for call in calls["tiny-sd"]]
    first, second = sizes[0], sizes[-1]
    assert first[0] == second[0] == 3 and [s * 3 // 2 for s in first[1]] == list(second[1])  # both passes composed
    assert "RP Active: True" in made.infotexts[0] and "Hires upscale: 1.5" in made.infotexts[0]


def test_regions_of_one_text_are_that_text(engine):
    """The same latents up to float32 rounding of the weighted sums (1.4e-5 seen on one CPU, where 1e-5 is the
    default tolerance); another text differs by far more."""
    plain = latents(engine, prompt="a red circle", regional_prompter=False)
    close = {"atol": 1e-4, "rtol": 1e-4}
    torch.testing.assert_close(latents(engine, prompt="a red circle BREAK a red circle", rp_ratios="3,1"), plain,
                               **close)
    torch.testing.assert_close(latents(engine, prompt="a red circle ADDBASE a red circle BREAK a red circle",
                                       rp_base_ratios="0.4,0.9"), plain, **close)
    assert not torch.allclose(latents(engine), plain)


def test_the_infotext_carries_the_extensions_keys_and_reads_back():
    request = make(rp_ratios="2,1", rp_use_base=True, rp_base_ratios="0.3", prompt="field BREAK red BREAK blue")
    text = request.infotext(7, "tiny-sd")
    assert ('RP Active: True, RP Divide mode: Matrix, RP Matrix submode: Columns, RP Calc Mode: Latent, '
            'RP Ratios: "2,1", RP Base Ratios: 0.3, RP Use Base: True, RP Use Common: False') in text
    back = GenerationRequest.from_infotext(text)
    assert (back.regional_prompter, back.rp_ratios, back.rp_use_base, back.rp_base_ratios) == (True, "2,1", True,
                                                                                                 "0.3")
    assert "RP Active" not in make(prompt="a red circle").infotext(7, "tiny-sd")  # no keyword: the extension is off
    assert not GenerationRequest.from_infotext(text.replace("Matrix", "Mask")).regional_prompter  # not built

