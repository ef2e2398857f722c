"""Prompt styles (A1111's styles.csv in the models folder): how a style's text joins the prompt, the file read
again when it changes, the engine writing styles into the prompts, and the API's listing and ``styles`` field."""

import json
import os

import pytest

from pipelines.errors import RequestError
from pipelines.request import GenerationRequest
from pipelines.styles import Style, StyleLibrary, merge

STYLES = "name,prompt,negative_prompt\nframed,a picture of {prompt},\nred,red,blue\n"


@pytest.mark.parametrize("style, prompt, merged", [
    ("a picture of {prompt}", "a cat", "a picture of a cat"),
    ("red", "a cat", "a cat, red"),
    ("red", "", "red"),
    ("", "a cat", "a cat"),
    ("{prompt}, {prompt}", "x", "x, x"),
])
def test_a_style_takes_the_prompt_at_its_placeholder_or_follows_it(style, prompt, merged):
    assert merge(style, prompt) == merged


def test_the_file_is_read_with_a1111s_byte_order_mark_and_again_when_it_changes(tmp_path):
    library = StyleLibrary(tmp_path)
    assert library.styles() == {}
    (tmp_path / "styles.csv").write_text("\ufeff" + STYLES, encoding="utf-8")
    assert list(library.styles()) == ["framed", "red"] and library.styles()["red"].negative_prompt == "blue"
    (tmp_path / "styles.csv").write_text(STYLES + "night,{prompt} at night,\n")
    os.utime(tmp_path / "styles.csv", ns=(1, 10**18))  # a new mtime even on a coarse clock
    assert list(library.styles()) == ["framed", "red", "night"]


def test_styles_apply_in_order_and_an_unknown_one_names_the_field(tmp_path):
    (tmp_path / "styles.csv").write_text(STYLES)
    library = StyleLibrary(tmp_path)
    styled = library.apply(GenerationRequest(prompt="a cat", negative_prompt="fog", styles=["framed", "red"]))
    assert (styled.prompt, styled.negative_prompt, styled.styles) == ("a picture of a cat, red", "fog, blue", ())
    with pytest.raises(RequestError, match="Unknown style 'gold'. Available: framed, red.") as raised:
        library.apply(GenerationRequest(prompt="a cat", styles=("gold",)))
    assert raised.value.field == "styles"


def test_the_engine_and_the_api_write_styles_into_the_prompts(models_dir, tmp_path_factory, api_client):
    root = tmp_path_factory.mktemp("styled")
    (root / "Stable-diffusion").mkdir()
    (root / "Stable-diffusion" / "tiny-sd").symlink_to(models_dir / "Stable-diffusion" / "tiny-sd")
    (root / "styles.csv").write_text(STYLES)
    client, _ = api_client(root)
    assert client.get("/sdapi/v1/prompt-styles").json() == [
        {"name": "framed", "prompt": "a picture of {prompt}", "negative_prompt": ""},
        {"name": "red", "prompt": "red", "negative_prompt": "blue"}]
    body = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "styles": ["framed", "red"], "width": 64,
                                                  "height": 64, "steps": 1}).json()
    assert json.loads(body["info"])["infotexts"][0].startswith("a picture of a cat, red\nNegative prompt: blue\n")
    refused = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "styles": ["gold"], "steps": 1})
    assert refused.status_code == 422 and refused.json()["field"] == "styles"


def test_the_editor_saves_replaces_and_deletes_styles_in_a1111s_file(tmp_path):
    library = StyleLibrary(tmp_path)
    library.save(Style(" framed ", "a picture of {prompt}"))  # a file made on the first save, the name trimmed
    library.save(Style("quoted, with \"marks\"", "red, \"bold\"", "blue\nsky"))
    library.save(Style("framed", "a photo of {prompt}", "blurry"))  # replaced where it stands
    assert list(library.styles()) == ["framed", 'quoted, with "marks"']
    assert library.styles()["framed"] == Style("framed", "a photo of {prompt}", "blurry")
    again = StyleLibrary(tmp_path).styles()  # as another reader (A1111) reads the file
    assert again['quoted, with "marks"'] == Style('quoted, with "marks"', 'red, "bold"', "blue\nsky")
    assert (tmp_path / "styles.csv").read_bytes().startswith("\ufeffname,prompt,negative_prompt".encode())
    library.delete("framed")
    assert list(library.styles()) == ['quoted, with "marks"']
    assert [path.name for path in tmp_path.iterdir()] == ["styles.csv"]  # no temporary file left
    for refused in (lambda: library.save(Style("  ")), lambda: library.delete("framed")):
        with pytest.raises(RequestError) as error:
            refused()
        assert error.value.field == "name"
    assert library.written(["quoted, with \"marks\""], "a cat", "") == ('a cat, red, "bold"', "blue\nsky")
