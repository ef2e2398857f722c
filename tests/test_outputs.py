"""OutputWriter: A1111 path layout and numbering, atomic never-overwriting saves, thread safety; the Save buttons'
log."""

import csv
import datetime
import os
import threading
import zipfile

import pytest
from PIL import Image

from pipelines.infotext import read_infotext
from pipelines.outputs import LOG_COLUMNS, OutputWriter, SaveLog

DAY = datetime.date(2024, 5, 17)


def _image(color="red"):
    return Image.new("RGB", (8, 8), color)


def test_path_layout_and_first_number(tmp_path):
    writer = OutputWriter(tmp_path)
    path = writer.save(_image(), "a cat", seed=123, when=DAY)
    assert path == tmp_path / "txt2img-images" / "2024-05-17" / "00000-123.png"
    assert path.is_file()
    second = writer.save(_image(), "a cat", seed=124, category="img2img-images", when=DAY)
    assert second == tmp_path / "img2img-images" / "2024-05-17" / "00000-124.png"


def test_defaults_to_today(tmp_path):
    path = OutputWriter(tmp_path).save(_image(), "x", seed=1)
    assert path.parent.name == datetime.date.today().isoformat()


def test_numbering_continues_after_existing_files(tmp_path):
    folder = tmp_path / "txt2img-images" / "2024-05-17"
    folder.mkdir(parents=True)
    (folder / "00007-1.png").write_bytes(b"old")
    (folder / "notes.txt").write_text("not numbered")
    writer = OutputWriter(tmp_path)
    assert writer.save(_image(), "x", seed=42, when=DAY).name == "00008-42.png"
    assert writer.save(_image(), "x", seed=43, when=DAY).name == "00009-43.png"


def test_disabled_writer_writes_nothing(tmp_path):
    writer = OutputWriter(tmp_path / "outputs", enabled=False)
    assert writer.save(_image(), "x", seed=1, when=DAY) is None
    assert not (tmp_path / "outputs").exists()


def test_saved_png_carries_the_infotext(tmp_path):
    infotext = "a cat 猫\nNegative prompt: blurry\nSteps: 20, Seed: 5, Size: 8x8"
    path = OutputWriter(tmp_path).save(_image("blue"), infotext, seed=5, when=DAY)
    with Image.open(path) as saved:
        assert saved.format == "PNG"
        assert read_infotext(saved) == infotext
        assert saved.getpixel((0, 0)) == (0, 0, 255)


@pytest.mark.parametrize("format, pillow", [("jpg", "JPEG"), ("webp", "WEBP")])
def test_jpeg_and_webp_carry_the_infotext_in_exif_as_a1111s_do(tmp_path, format, pillow):
    """A1111's samples_format: the infotext in the EXIF UserComment, which PNG Info (and A1111) read back; numbers go
    on across formats."""
    infotext = "a cat 猫\nNegative prompt: blurry\nSteps: 20, Seed: 5, Size: 8x8"
    (tmp_path / "txt2img-images" / "2024-05-17").mkdir(parents=True)
    (tmp_path / "txt2img-images" / "2024-05-17" / "00003-1.png").write_bytes(b"old")
    path = OutputWriter(tmp_path, format=format).save(_image("blue"), infotext, seed=5, when=DAY, postprocessing="x")
    assert path.name == f"00004-5.{format}"
    with Image.open(path) as saved:
        assert saved.format == pillow and read_infotext(saved) == infotext
        assert max(abs(a - b) for a, b in zip(saved.convert("RGB").getpixel((4, 4)), (0, 0, 255))) < 16  # lossy
    with pytest.raises(ValueError, match="gif"):
        OutputWriter(tmp_path, format="gif")


@pytest.mark.parametrize("format", ["png", "jpg"])
def test_without_pnginfo_a_file_carries_no_parameters_but_its_txt_does(tmp_path, format):
    """A1111's enable_pnginfo off: no PNG text (nor other chunks), no EXIF comment; the .txt, asked for, still."""
    writer = OutputWriter(tmp_path, format=format)
    writer.pnginfo, writer.save_txt = False, True
    path = writer.save(_image(), "a cat\nSteps: 20, Seed: 5", seed=5, when=DAY, postprocessing="x")
    with Image.open(path) as saved:
        assert read_infotext(saved) is None and "postprocessing" not in saved.info
    assert path.with_suffix(".txt").read_text() == "a cat\nSteps: 20, Seed: 5"


def test_concurrent_saves_never_collide(tmp_path):
    # Two writers share the folder, as two processes would; the same seed makes every number clash a name clash.
    writers = [OutputWriter(tmp_path), OutputWriter(tmp_path)]
    paths, errors = [], []

    def work(i):
        try:
            for j in range(5):
                paths.append(writers[i % 2].save(_image(), f"thread {i} image {j}", seed=1, when=DAY))
        except Exception as exc:  # surfaced below; a thread's exception would otherwise be lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    folder = tmp_path / "txt2img-images" / "2024-05-17"
    assert len(set(paths)) == 40
    assert sorted(os.listdir(folder)) == sorted(p.name for p in paths)  # no leftover temp files
    texts = set()
    for p in paths:
        with Image.open(p) as saved:
            texts.add(read_infotext(saved))
    assert len(texts) == 40  # every image survived; none was overwritten by another


def test_existing_file_is_never_overwritten_with_stale_counter(tmp_path):
    writer = OutputWriter(tmp_path)
    first = writer.save(_image(), "first", seed=9, when=DAY)
    assert first.name == "00000-9.png"
    intruder = first.parent / "00001-9.png"  # written behind the writer's back
    intruder.write_bytes(b"not ours")

    path = writer.save(_image(), "second", seed=9, when=DAY)

    assert path.name == "00002-9.png"
    assert intruder.read_bytes() == b"not ours"
    with Image.open(path) as saved:
        assert read_infotext(saved) == "second"
    assert sorted(os.listdir(first.parent)) == ["00000-9.png", "00001-9.png", "00002-9.png"]


def test_the_save_log_keeps_pictures_a_csv_row_per_save_and_zips(tmp_path):
    """A1111's Save and Zip: numbered files with their infotexts, log.csv's columns from the first picture's."""
    texts = ["a cat\nNegative prompt: dark\nSteps: 3, Sampler: Euler a, CFG scale: 7, Seed: 11, Size: 64x48, "
             "Model hash: abc123, Model: tiny-sd", "a cat\nSteps: 3, Sampler: Euler a, CFG scale: 7, Seed: 12"]
    log = SaveLog(tmp_path / "log")
    kept = log.keep([(_image("red"), texts[0]), (_image("blue"), texts[1])], make_zip=True)
    archive, *pictures = kept
    assert archive.suffix == ".zip" and [p.name.split("-", 1)[1] for p in pictures] == ["11.png", "12.png"]
    assert all(p.parent.parent == tmp_path / "log" / "images" for p in kept)
    with zipfile.ZipFile(archive) as opened:
        assert opened.namelist() == [p.name for p in pictures]
        with opened.open(pictures[1].name) as member, Image.open(member) as picture:
            assert read_infotext(picture) == texts[1] and picture.getpixel((0, 0)) == (0, 0, 255)
    [again] = log.keep([(_image(), texts[1])])
    assert again not in kept and again.is_file()  # never over an earlier one
    with open(log.csv, newline="", encoding="utf-8") as file:
        header, first, second = list(csv.reader(file))
    assert tuple(header) == LOG_COLUMNS
    assert dict(zip(header, first)) == {
        "prompt": "a cat", "seed": "11", "width": "64", "height": "48", "sampler": "Euler a", "cfgs": "7",
        "steps": "3", "filename": pictures[0].relative_to(tmp_path / "log").as_posix(), "negative_prompt": "dark",
        "sd_model_name": "tiny-sd", "sd_model_hash": "abc123"}
    assert second[1] == "12" and second[7].endswith(again.name)


def test_the_samples_format_flag_reaches_the_saved_pictures_and_the_options(models_dir, tmp_path, api_client):
    import app

    args = app.parse_args(["--samples-format", "webp", "--outputs-dir", str(tmp_path)])
    settings = app.settings_from_args(args)
    assert settings.samples_format == "webp"
    client, _ = api_client(models_dir, samples_format="webp", save_outputs=True, outputs_dir=tmp_path)
    assert client.get("/sdapi/v1/options").json()["samples_format"] == "webp"
    body = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "steps": 1, "width": 64, "height": 64,
                                                  "save_images": True}).json()
    [saved] = tmp_path.rglob("*.webp")
    with Image.open(saved) as picture:
        assert read_infotext(picture).startswith("a cat\n") and body["images"]  # the API still answers PNGs
