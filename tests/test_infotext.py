"""A1111 infotext: exact text layout, parser quirks, and carriage in PNG and JPEG files."""

import io

import pytest
from PIL import ExifTags, Image

from pipelines.infotext import format_infotext, parse_infotext, png_metadata, read_infotext

A1111_EXAMPLE = (
    "a cat\n"
    "Negative prompt: blurry\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 123, Size: 512x512, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
)

EXAMPLE_PARAMS = {
    "Steps": 20,
    "Sampler": "DPM++ 2M",
    "Schedule type": "Karras",
    "CFG scale": 7.0,
    "Seed": 123,
    "Size": "512x512",
    "Model hash": "6ce0161689",
    "Model": "v1-5-pruned-emaonly",
    "Version": "v1.10.1",
}


def test_formats_the_a1111_example_exactly():
    assert format_infotext("a cat", "blurry", EXAMPLE_PARAMS) == A1111_EXAMPLE


def test_parses_the_a1111_example():
    prompt, negative, params = parse_infotext(A1111_EXAMPLE)
    assert (prompt, negative) == ("a cat", "blurry")
    assert params == {key: ("7" if key == "CFG scale" else str(v)) for key, v in EXAMPLE_PARAMS.items()}
    assert list(params) == list(EXAMPLE_PARAMS)


def test_floats_keep_their_fraction_unless_integral():
    text = format_infotext("p", "", {"CFG scale": 7.5, "Denoising strength": 1.0, "Eta": 0.25})
    assert text == "p\nCFG scale: 7.5, Denoising strength: 1, Eta: 0.25"


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("a, b", '"a, b"'),
        ("lora1: 0a1b, lora2: 2c3d", '"lora1: 0a1b, lora2: 2c3d"'),
        ("line one\nline two", '"line one\\nline two"'),
        ('say "hi", ok', '"say \\"hi\\", ok"'),
        ("猫: café", '"猫: café"'),
    ],
)
def test_values_with_separators_are_json_quoted_and_round_trip(value, written):
    text = format_infotext("p", "", {"Steps": 20, "Lora hashes": value, "Seed": 1})
    assert text == f"p\nSteps: 20, Lora hashes: {written}, Seed: 1"
    assert "\n" not in text.split("\n", 1)[1]
    assert parse_infotext(text) == ("p", "", {"Steps": "20", "Lora hashes": value, "Seed": "1"})


def test_empty_and_none_values_are_dropped():
    text = format_infotext("p", "", {"Steps": 20, "VAE": None, "Model": "", "Seed": 5, "Clip skip": 0})
    assert text == "p\nSteps: 20, Seed: 5, Clip skip: 0"


def test_key_equal_to_value_is_written_bare():
    text = format_infotext("p", "", {"Steps": 20, "Tiling": "Tiling", "Seed": 5})
    assert text == "p\nSteps: 20, Tiling, Seed: 5"


def test_no_negative_prompt_line_when_negative_is_empty():
    text = format_infotext("a dog", "", {"Steps": 20, "Seed": 1, "Size": "64x64"})
    assert text == "a dog\nSteps: 20, Seed: 1, Size: 64x64"
    assert parse_infotext(text) == ("a dog", "", {"Steps": "20", "Seed": "1", "Size": "64x64"})


def test_no_params_gives_just_the_prompt():
    assert format_infotext("  a dog  ", "", {}) == "a dog"
    assert parse_infotext("a dog") == ("a dog", "", {})


def test_multi_line_prompt_and_negative_round_trip():
    prompt, negative = "a cat\non a mat\nBREAK sunset", "blurry\nlow quality"
    params = {"Steps": 20, "Seed": 7, "Size": "64x64"}
    text = format_infotext(prompt, negative, params)
    assert text == (
        "a cat\non a mat\nBREAK sunset\nNegative prompt: blurry\nlow quality\nSteps: 20, Seed: 7, Size: 64x64"
    )
    assert parse_infotext(text) == (prompt, negative, {k: str(v) for k, v in params.items()})


def test_last_line_with_fewer_than_three_params_is_prompt():
    text = "a cat\nstyle: oil, mood: calm"
    assert parse_infotext(text) == ("a cat\nstyle: oil, mood: calm", "", {})
    assert parse_infotext("a cat\nNegative prompt: ugly\nSteps: 20, Seed: 1") == (
        "a cat",
        "ugly\nSteps: 20, Seed: 1",
        {},
    )


def test_params_only_text_has_empty_prompt():
    assert parse_infotext("Steps: 20, Seed: 1, Size: 64x64") == ("", "", {"Steps": "20", "Seed": "1", "Size": "64x64"})


def test_malformed_quoted_value_is_kept_raw():
    _, _, params = parse_infotext('p\nSteps: 20, Bad: "\\x", Seed: 1')
    assert params == {"Steps": "20", "Bad": '"\\x"', "Seed": "1"}


def _reopen(image, fmt, **save_args):
    buf = io.BytesIO()
    image.save(buf, fmt, **save_args)
    buf.seek(0)
    return Image.open(buf)


@pytest.mark.parametrize("prompt", ["a cat", "a cat 猫 ✨"])  # latin-1 (tEXt) and not (iTXt)
def test_png_round_trip(tmp_path, prompt):
    text = format_infotext(prompt, "blurry", EXAMPLE_PARAMS)
    path = tmp_path / "out.png"
    Image.new("RGB", (8, 8), "red").save(path, pnginfo=png_metadata(text))
    with Image.open(path) as reopened:
        assert read_infotext(reopened) == text
        assert parse_infotext(read_infotext(reopened))[0] == prompt


def test_image_without_metadata_has_no_infotext():
    assert read_infotext(_reopen(Image.new("RGB", (8, 8)), "PNG")) is None
    assert read_infotext(_reopen(Image.new("RGB", (8, 8)), "JPEG")) is None


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: b"UNICODE\0" + text.encode("utf-16-be"),  # what A1111 (piexif) writes
        lambda text: b"UNICODE\0" + text.encode("utf-16"),  # with a byte-order mark
        lambda text: b"ASCII\0\0\0" + text.encode("utf-8"),  # leniently read as UTF-8
        lambda text: text.encode("utf-8"),  # no header at all
    ],
)
@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_exif_user_comment_is_read(encode, fmt):
    text = format_infotext("a cat, 猫", "blurry", EXAMPLE_PARAMS)
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = encode(text)
    assert read_infotext(_reopen(Image.new("RGB", (8, 8)), fmt, exif=exif)) == text
