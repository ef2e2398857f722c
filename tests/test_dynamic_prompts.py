"""Dynamic Prompts (pipelines/dynamic_prompts.py): templates resolved per picture, wildcards, combinatorial mode,
the seeds, the infotext's template lines and the refusals. The pictures themselves: test_embedded_model.py."""

import pytest
from PIL import Image

from pipelines.dynamic_prompts import Wildcards, templates
from pipelines.errors import RequestError
from pipelines.infotext import format_infotext, parse_infotext
from pipelines.request import GenerationRequest
from pipelines.xyz import plan as plot


@pytest.fixture
def wildcards(tmp_path):
    folder = tmp_path / "wildcards"
    (folder / "animals").mkdir(parents=True)
    (folder / "colors.txt").write_text("red\ngreen\n# a comment, not a value\nblue\n")
    (folder / "animals" / "cats.txt").write_text("tabby cat\n")
    (folder / "animals" / "dogs.txt").write_text("a {small|big} dog\n")
    return Wildcards(tmp_path)


def resolved(wildcards, prompt, **values):
    return wildcards.resolved(GenerationRequest(prompt=prompt, seed=values.pop("seed", 7), **values))


def test_a_prompt_without_templates_is_left_alone(wildcards):
    request = GenerationRequest(prompt=r"a (red:1.2) \(circle\) [a|b] [c:d:0.5] <lora:x:0.8> BREAK AND", seed=1,
                                batch_size=3)
    assert wildcards.resolved(request) is request
    assert request.seeds() == [1, 2, 3] and request.prompted(0, [1, 2, 3]) == [(request, [1, 2, 3])]
    off = GenerationRequest(prompt="a {red|blue} circle", seed=1, dynamic_prompts=False)
    assert wildcards.resolved(off) is off


def test_random_mode_gives_each_picture_a_prompt_that_the_seed_decides(wildcards):
    request = resolved(wildcards, "a {red|green|blue|yellow} circle, __colors__ background", batch_size=4,
                       batch_count=2)
    assert len(request.all_prompts) == 8 and request.batch_count == 2 and request.seeds() == list(range(7, 15))
    for prompt in request.all_prompts:
        colour, background = prompt.removeprefix("a ").removesuffix(" background").split(" circle, ")
        assert colour in ("red", "green", "blue", "yellow") and background in ("red", "green", "blue")
    assert len(set(request.all_prompts)) > 2  # measured: 7 different of 8
    assert resolved(wildcards, "a {red|green|blue|yellow} circle, __colors__ background", batch_size=4,
                    batch_count=2).all_prompts == request.all_prompts  # the same seed, the same prompts
    assert [resolved(wildcards, "{a|b|c|d|e|f|g|h}", seed=seed).all_prompts for seed in range(8)] != [("a",)] * 8
    assert request.all_negative_prompts == ("",) * 8 and request.prompt.startswith("a {red")  # the template kept


def test_wildcards_nest_and_take_globs_and_edits_need_no_restart(wildcards):
    assert wildcards.names() == ["animals/cats", "animals/dogs", "colors"]
    request = resolved(wildcards, "__animals/*__", batch_size=8)
    assert set(request.all_prompts) <= {"tabby cat", "a small dog", "a big dog"} and len(set(request.all_prompts)) > 1
    (wildcards.folder / "shapes.txt").write_text("star\n")
    assert resolved(wildcards, "a __shapes__").all_prompts == ("a star",)


def test_combinatorial_mode_makes_every_combination_in_order(wildcards):
    request = resolved(wildcards, "a {red|blue} {circle|square}", negative_prompt="{dark|dim}", batch_size=3,
                       dp_combinatorial=True, dp_combinatorial_batches=2)
    assert request.all_prompts == ("a red circle", "a red square", "a blue circle", "a blue square") * 2
    assert request.all_negative_prompts == ("dark", "dim") * 4  # the shorter list repeated
    assert request.batch_count == 3 and request.image_count == 8 and request.seeds() == list(range(7, 15))
    runs = request.prompted(6, request.seeds()[6:9])  # the last batch: two pictures
    assert [(run.prompt, run.negative_prompt, seeds) for run, seeds in runs] == [
        ("a blue circle", "dark", [13]), ("a blue square", "dim", [14])]
    assert runs[0][0].all_prompts == () and runs[0][0].seed == 7  # a run is an ordinary request of its prompts
    capped = resolved(wildcards, "{a|b|c} {x|y}", dp_combinatorial=True, dp_max_generations=4)
    assert capped.all_prompts == ("a x", "a y", "b x", "b y") and capped.batch_count == 4


def test_the_negative_prompt_alone_can_be_the_template(wildcards):
    request = resolved(wildcards, "a circle", negative_prompt="{red|green|blue}", dp_combinatorial=True)
    assert request.all_prompts == ("a circle",) * 3 and request.all_negative_prompts == ("red", "green", "blue")


def test_pictures_of_one_prompt_run_together(wildcards):
    request = resolved(wildcards, "{a|b}", batch_size=4, dp_combinatorial=True, dp_combinatorial_batches=2)
    assert request.all_prompts == ("a", "b", "a", "b")
    same = GenerationRequest(prompt="x", seed=3, batch_size=4, all_prompts=("a", "a", "b", "b"),
                             all_negative_prompts=("n",) * 4)
    assert [(run.prompt, seeds) for run, seeds in same.prompted(0, same.seeds())] == [("a", [3, 4]), ("b", [5, 6])]


def test_fixed_seed_gives_every_picture_the_seed(wildcards):
    request = resolved(wildcards, "{a|b|c}", dp_combinatorial=True, dp_fixed_seed=True)
    assert request.seeds() == [7, 7, 7]
    assert GenerationRequest(prompt="plain", seed=7, batch_size=2, dp_fixed_seed=True).seeds() == [7, 8]  # no template


def test_loopback_and_sd_upscale_take_a_prompt_a_batch(wildcards):
    picture = Image.new("RGB", (64, 64))
    chains = resolved(wildcards, "{a|b|c}", task="img2img", init_image=picture, loopback=True, dp_combinatorial=True)
    assert chains.all_prompts == ("a", "b", "c") and chains.batch_count == 3  # a chain each
    tiles = resolved(wildcards, "{a|b}", task="img2img", init_image=picture, sd_upscale=True, width=64, height=64,
                     sd_upscale_overlap=16, batch_size=4, batch_count=2)
    assert len(tiles.all_prompts) == 2 and tiles.batch_count == 2  # its batch size counts tiles


@pytest.mark.parametrize("prompt, values, field, words", [
    ("a {red|blue", {}, "prompt", "cannot read the prompt at character 3"),
    ("a", {"negative_prompt": "{x"}, "negative_prompt", "cannot read the negative prompt"),
    ("a __nothing__ here", {}, "prompt", "No wildcard file holds __nothing__: put nothing.txt"),
    ("{1|2|3|4|5|6|7|8|9|10} {1|2|3|4|5|6|7|8|9|10} {a|b}", {"dp_combinatorial": True}, "dp_max_generations",
     "more than 100 batches of 1"),
    ("{1|2|3|4|5|6|7|8|9|10} {1|2|3|4|5|6}", {"dp_combinatorial": True, "dp_combinatorial_batches": 2},
     "dp_max_generations", "more than 100 batches"),
])
def test_bad_templates_are_refused_with_a_message(wildcards, prompt, values, field, words):
    with pytest.raises(RequestError) as caught:
        resolved(wildcards, prompt, **values)
    assert caught.value.field == field and words in str(caught.value)


def test_wildcard_message_lists_the_known_ones(wildcards):
    with pytest.raises(RequestError, match=r"Known: __animals/cats__, __animals/dogs__, __colors__\."):
        resolved(wildcards, "__colour__")


@pytest.mark.parametrize("values, field", [({"dp_max_generations": 1001}, "dp_max_generations"),
                                           ({"dp_combinatorial_batches": 0}, "dp_combinatorial_batches"),
                                           ({"all_prompts": ("a",)}, "all_negative_prompts")])
def test_settings_out_of_range_are_refused(values, field):
    with pytest.raises(RequestError) as caught:
        GenerationRequest(**values)
    assert caught.value.field == field


def test_the_xyz_plot_refuses_combinatorial_mode():
    with pytest.raises(RequestError, match="cells are one picture each") as caught:
        plot(GenerationRequest(prompt="{a|b}", dp_combinatorial=True), [("Steps", "1, 2")])
    assert caught.value.field == "dp_combinatorial"
    assert plot(GenerationRequest(prompt="{a|b}"), [("Steps", "1, 2")]).cells  # random mode: a prompt a cell


def test_the_templates_go_on_lines_after_the_parameters_and_read_back(wildcards):
    request = resolved(wildcards, "a {red|blue}\ncircle", negative_prompt="{dark|dim}")
    text = format_infotext(request.all_prompts[0], request.all_negative_prompts[0],
                           {"Steps": 20, "Seed": 7, "Size": "64x64", **templates(request)})
    assert text.endswith("Size: 64x64\nTemplate: a {red|blue}\ncircle\nNegative Template: {dark|dim}")
    prompt, negative, params = parse_infotext(text)
    assert (prompt, negative) == (request.all_prompts[0], request.all_negative_prompts[0])
    assert (params["Template"], params["Negative Template"], params["Size"]) == ("a {red|blue}\ncircle",
                                                                                 "{dark|dim}", "64x64")
    assert templates(GenerationRequest(prompt="plain")) == {}
    assert parse_infotext("Template: a\nSteps: 2, Seed: 3, Size: 4x4")[0] == "Template: a"  # a prompt's own line
