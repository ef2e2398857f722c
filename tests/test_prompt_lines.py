"""A1111's "Prompts from file or textbox": lines read as A1111 reads them, seeds as its checkboxes say."""

import pytest

from pipelines.errors import RequestError
from pipelines.prompt_lines import PromptLines, expand, read_line
from pipelines.request import GenerationRequest

TAB = {"prompt": "on white", "negative_prompt": "blurry", "seed": 10, "batch_size": 2, "batch_count": 3, "steps": 20}


def test_a_line_is_a_prompt_or_an_a1111_option_line():
    assert read_line("a red circle", 1) == {"prompt": "a red circle"}
    assert read_line('--prompt "a red circle" big --negative_prompt dark, noisy --steps 30 --cfg_scale 4.5 '
                     '--sampler_name "DPM++ 2M" --n_iter 2 --tiling true --styles "Night, No red" '
                     '--sd_model easel-shapes --seed_resize_from_w 32', 1) == {
        "prompt": "a red circle big", "negative_prompt": "dark, noisy", "steps": 30, "cfg_scale": 4.5,
        "sampler": "DPM++ 2M", "batch_count": 2, "tiling": True, "styles": ("Night", "No red"),
        "model": "easel-shapes", "seed_resize_from_w": 32}
    assert read_line("--sampler_index Euler --tiling false", 1) == {"sampler": "Euler", "tiling": False}


@pytest.mark.parametrize("line, message", [
    ("--steps many", "Line 3 of the prompt list: --steps takes a number, got 'many'."),
    ("--steps", "Line 3 of the prompt list: --steps needs a value."),
    ("--wobble 2", "Line 3 of the prompt list: unknown option --wobble. Known: --prompt, --negative_prompt, "),
    ("--outpath_samples /tmp", "Line 3 of the prompt list: --outpath_samples is an A1111 option Easel does not"),
    ('--prompt "a cat', "Line 3 of the prompt list: No closing quotation"),
    ("a cat --steps 2", "Line 3 of the prompt list: expected an option such as --steps, got 'a'."),
])
def test_bad_lines_are_refused_by_their_number(line, message):
    with pytest.raises(RequestError) as refused:
        read_line(line, 3)
    assert str(refused.value).startswith(message) and refused.value.field == "prompt_lines"


def test_jobs_put_each_line_before_or_after_the_tabs_prompts():
    text = "a red circle\n\n  --prompt a blue square --negative_prompt dark --seed 4  \n--steps 5"
    start = PromptLines(text).jobs(TAB)
    assert [(job["prompt"], job["negative_prompt"], job["seed"], job["steps"]) for job in start] == [
        ("a red circle on white", "blurry", 10, 20), ("a blue square on white", "dark blurry", 4, 20),
        ("on white", "blurry", 10, 5)]
    end = PromptLines(text, position="end").jobs({**TAB, "negative_prompt": ""})
    assert [(job["prompt"], job["negative_prompt"]) for job in end] == [
        ("on white a red circle", ""), ("on white a blue square", "dark"), ("on white", "")]
    assert all(GenerationRequest.from_values(job).prompt for job in start)  # valid requests


def test_seeds_iterate_per_line_or_stay_the_same_or_are_drawn_once():
    text = "a\nb\n--prompt c --seed 99"
    assert [job["seed"] for job in PromptLines(text).jobs(TAB)] == [10, 10, 99]
    assert [job["seed"] for job in PromptLines(text, iterate_seed=True).jobs(TAB)] == [10, 16, 99]  # 2 x 3 a line
    assert [job["seed"] for job in PromptLines(text).jobs({**TAB, "seed": -1})] == [-1, -1, 99]  # each draws its own
    drawn = [job["seed"] for job in PromptLines(text, same_seed=True).jobs({**TAB, "seed": -1})]
    assert drawn[0] == drawn[1] >= 0 and drawn[2] == 99
    wrapped = PromptLines("a\nb", iterate_seed=True).jobs({**TAB, "seed": 2**32 - 1})
    assert [job["seed"] for job in wrapped] == [2**32 - 1, 5]


def test_a_tab_without_a_list_is_one_job():
    assert expand(TAB) == [TAB] and expand({**TAB, "prompt_lines": " \n "}) == [{**TAB, "prompt_lines": " \n "}]
    assert [job["prompt"] for job in expand({**TAB, "prompt_lines": "x\ny", "lines_position": "end"})] == [
        "on white x", "on white y"]
    with pytest.raises(RequestError, match="Seed must be a whole number, got None"):  # a number box emptied
        expand({**TAB, "prompt_lines": "x", "seed": None, "lines_iterate_seed": True})
    with pytest.raises(RequestError, match="Choose start or end"):
        expand({**TAB, "prompt_lines": "x", "lines_position": "middle"})
