"""OutputWriter: A1111 path layout and numbering, atomic never-overwriting saves, thread safety."""

import datetime
import os
import threading

from PIL import Image

from pipelines.infotext import read_infotext
from pipelines.outputs import OutputWriter

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
