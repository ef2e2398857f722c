"""The Extras tab's engine: a picture upscaled by one upscaler, blended with a second, sized and saved as A1111's;
then split, cropped and flipped into a training set (``pipelines.postprocessing``), a batch named after its sources
with their captions beside the results."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines import extras
from pipelines.errors import RequestError
from pipelines.extras import ExtrasRequest
from pipelines.infotext import PNG_KEY


@pytest.fixture
def picture():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    image.info[PNG_KEY] = "a cat\nSteps: 2, Seed: 1, Size: 40x30"
    return image


def test_scale_by_runs_an_x4_file_as_often_as_needed_and_keeps_the_parameters(engine, picture):
    with engine.registry.lease(engine.registry.resolve_upscaler("tiny-x4")) as upscaler:
        calls = []
        hook = upscaler.pipe.net.register_forward_hook(lambda module, args, output: calls.append(args[0].shape))
    try:
        done = engine.postprocess(ExtrasRequest(picture, upscaling_resize=8, upscaler_1="tiny-x4"))
    finally:
        hook.remove()
    (twice,), text, (path,) = done.images, done.text, done.paths
    assert twice.size == (320, 240) and [shape[-2:] for shape in calls] == [(30, 40), (120, 160)]  # x4, x4, to 8x
    assert text == "Postprocess upscale by: 8, Postprocess upscaler: tiny-x4"
    assert path.parent.name == "extras-images" and path.name == f"{int(path.stem):05d}.png"  # no dated folder
    with Image.open(path) as saved:
        assert saved.info[PNG_KEY] == picture.info[PNG_KEY] and saved.info["postprocessing"] == text


def test_scale_to_crops_or_stretches_and_a_second_upscaler_blends_in(engine, picture):
    def run(**values):
        (image,) = engine.postprocess(ExtrasRequest(picture, **values), save=False).images
        return np.asarray(image, dtype=np.int16)

    cropped = run(resize_mode=1, upscaling_resize_w=64, upscaling_resize_h=64, upscaler_1="Lanczos")
    stretched = run(resize_mode=1, upscaling_resize_w=64, upscaling_resize_h=64, upscaling_crop=False,
                    upscaler_1="Lanczos")
    assert cropped.shape == stretched.shape == (64, 64, 3) and np.abs(cropped - stretched).mean() > 5
    nearest, lanczos = run(upscaler_1="Nearest"), run(upscaler_1="Lanczos")
    half = run(upscaler_1="Nearest", upscaler_2="Lanczos", extras_upscaler_2_visibility=0.5)
    assert np.abs(half - (nearest + lanczos) / 2).max() <= 1
    assert np.array_equal(run(), np.asarray(picture))  # None: the picture as it is


@pytest.mark.parametrize("values, field", [
    ({"upscaler_1": "nope"}, "upscaler_1"), ({"upscaler_2": "Latent"}, "upscaler_2"),
    ({"upscaling_resize": 9}, "upscaling_resize"), ({"resize_mode": 2}, "resize_mode"),
    ({"resize_mode": 1, "upscaling_resize_w": 10}, "upscaling_resize_w"),
])
def test_bad_extras_settings_are_refused_by_field(engine, picture, values, field):
    with pytest.raises(RequestError) as refused:
        engine.postprocess(ExtrasRequest(picture, **values), save=False)
    assert refused.value.field == field


def _stripes(width: int, height: int) -> Image.Image:
    """A picture whose every 32 columns (rows, when standing) have their own grey: where a piece came from shows."""
    along = width >= height
    values = (np.arange(width if along else height) // 32 * 23 % 256).astype(np.uint8)
    plane = np.tile(values, (height, 1)) if along else np.tile(values[:, None], (1, width))
    return Image.fromarray(np.stack([plane] * 3, axis=-1))


def _made(engine, image, **values):
    return engine.postprocess(ExtrasRequest(image, resize_mode=1, upscaling_resize_w=128, upscaling_resize_h=128,
                                            **values), save=False).images


def test_split_oversized_cuts_a_long_picture_into_overlapping_frames_of_the_target_size(engine):
    wide = _stripes(512, 128)
    pieces = _made(engine, wide, split_oversized=True)  # 4:1 against 1:1: ratio 0.25 <= 0.5
    starts = [0, 96, 192, 288, 384]  # 5 frames of 128 over 512 pixels, sharing at least 20% with a neighbour
    assert [np.array_equal(np.asarray(piece), np.asarray(wide.crop((x, 0, x + 128, 128))))
            for piece, x in zip(pieces, starts)] == [True] * 5 and len(pieces) == 5
    tall = _stripes(100, 300)  # standing: scaled to the target's width, cut down its length
    assert [piece.size for piece in _made(engine, tall, split_oversized=True, overlap_ratio=0)] == [(128, 128)] * 3
    half = _stripes(256, 128)  # ratio 0.5: split at the threshold 0.5 (3 frames, sharing 64 pixels), not at 0.4
    assert len(_made(engine, half, split_oversized=True)) == 3
    (kept,) = _made(engine, half, split_oversized=True, split_threshold=0.4)
    assert np.array_equal(np.asarray(kept), np.asarray(half))  # the upscaler None: the picture as it was


def _checker_at(x: int) -> Image.Image:
    """A plain 384x128 picture with a 64-pixel checkerboard whose left edge is at ``x``."""
    image = Image.new("RGB", (384, 128), (200, 220, 255))
    draw = ImageDraw.Draw(image)
    for i in range(8):
        for j in range(8):
            if (i + j) % 2:
                draw.rectangle((x + i * 8, 32 + j * 8, x + i * 8 + 7, 32 + j * 8 + 7), fill="black")
    return image


@pytest.mark.parametrize("x, left", [(320, 256), (0, 0), (160, 128)])
def test_focal_point_crop_keeps_the_busy_part_of_the_picture(engine, x, left):
    """The frame goes where the corners and the entropy are: the checkerboard's, at either end or in the middle."""
    image = _checker_at(x)
    for weights in ({}, {"focal_crop_entropy_weight": 0}, {"focal_crop_edges_weight": 0}):
        (crop,) = _made(engine, image, focal_crop=True, **weights)
        assert crop.size == (128, 128)
        found = np.asarray(crop)
        assert found.min() == 0 and abs(int((found == 0).all(-1).sum()) - 32 * 64) < 64  # the whole board
        if x != 160:  # at an end the frame is held inside the picture
            assert np.array_equal(found, np.asarray(image.crop((left, 0, left + 128, 128))))


def test_focal_crop_debug_picture_shows_the_frame_and_is_not_processed_further(engine):
    done = engine.postprocess(ExtrasRequest(_checker_at(310), resize_mode=1, upscaling_resize_w=128,
                                            upscaling_resize_h=128, focal_crop=True, focal_crop_debug=True,
                                            flipped_copies=True))
    crop, flipped, debug = done.images
    assert crop.size == flipped.size == (128, 128) and debug.size == (384, 128)
    assert np.array_equal(np.asarray(flipped), np.asarray(crop)[:, ::-1])  # the crop flipped, not the debug picture
    assert (np.asarray(debug)[:, 256] == (0, 255, 0)).all()  # the frame's left edge, in green
    assert [path.name for path in done.paths] == ["00000.png", "00001.png", "00002-focal-crop-debug.png"]


def test_auto_sized_crop_picks_the_largest_or_the_closest_size_and_notes_a_picture_no_size_fits(engine):
    def sizes(image, **values):
        done = engine.postprocess(ExtrasRequest(image, autosized_crop=True, **values), save=False)
        return [picture.size for picture in done.images], done.notes

    five_by_three = Image.new("RGB", (1000, 600))
    assert sizes(five_by_three) == ([(768, 448)], [])  # the most area within 10% of its shape (1.71 for 1.67)
    assert sizes(five_by_three, multicrop_objective="Minimize error") == ([(640, 384)], [])  # exactly 5:3
    (kept,), (note,) = sizes(Image.new("RGB", (2000, 100)))
    assert kept == (2000, 100) and "no size within the bounds" in note


def test_flipped_copies_mirror_every_piece(engine):
    wide = _stripes(256, 128)
    made = _made(engine, wide, split_oversized=True, overlap_ratio=0, flipped_copies=True,
                 flip_options=["Horizontal", "Both"])
    left, right = np.asarray(wide.crop((0, 0, 128, 128))), np.asarray(wide.crop((128, 0, 256, 128)))
    expected = [left, left[:, ::-1], left[::-1, ::-1], right, right[:, ::-1], right[::-1, ::-1]]
    assert len(made) == 6 and all(np.array_equal(np.asarray(a), b) for a, b in zip(made, expected))
    (vertical,) = _made(engine, wide, flipped_copies=True, flip_options=["Vertical"])[1:]
    assert np.array_equal(np.asarray(vertical), np.asarray(wide)[::-1])


def test_a_batch_folder_is_named_after_its_sources_with_their_captions_and_never_written_over(engine, tmp_path):
    source = tmp_path / "set"
    source.mkdir()
    _stripes(64, 64).save(source / "cat.png")
    (source / "cat.txt").write_text("a striped cat\n")
    _stripes(64, 64).save(source / "dog.jpg")
    (source / "notes.md").write_text("not a picture")
    pictures = list(extras.sources(extras.folder_files(str(source))))
    assert [(name, caption) for _, name, caption in pictures] == [("cat.png", "a striped cat"), ("dog.jpg", "")]

    def run():
        return [path.name for image, name, caption in pictures for path in engine.postprocess(ExtrasRequest(
            image, image_name=name, caption=caption, output_dir="sets/flipped", flipped_copies=True)).paths]

    assert run() == ["cat.png", "cat-1.png", "dog.png", "dog-1.png"]
    assert run() == ["cat-2.png", "cat-3.png", "dog-2.png", "dog-3.png"]  # a second run beside the first
    folder = engine.writer.root / "sets" / "flipped"
    assert [(folder / f"cat{n}.txt").read_text() for n in ("", "-1", "-2", "-3")] == ["a striped cat"] * 4
    assert not list(folder.glob("dog*.txt"))
    engine.original_names = False  # A1111's use_original_name_batch off: numbered as any picture
    assert [path.name for path in engine.postprocess(ExtrasRequest(
        pictures[0][0], image_name="cat.png", output_dir="sets/flipped")).paths] == ["00000.png"]


@pytest.mark.parametrize("values, field", [
    ({"output_dir": "../elsewhere"}, "output_dir"), ({"output_dir": "/tmp/x"}, "output_dir"),
    ({"multicrop_mindim": 800}, "multicrop_mindim"), ({"multicrop_objective": "Best"}, "multicrop_objective"),
    ({"flip_options": ["Sideways"]}, "flip_options"), ({"overlap_ratio": 0.95}, "overlap_ratio"),
    ({"multicrop_maxarea": 10}, "multicrop_maxarea"),
])
def test_bad_operation_settings_are_refused_by_field(picture, values, field):
    with pytest.raises(RequestError) as refused:
        ExtrasRequest(picture, **values)
    assert refused.value.field == field


def test_a_batch_from_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(RequestError, match="not a folder on the server") as refused:
        extras.folder_files(str(tmp_path / "nowhere"))
    assert refused.value.field == "input_dir"
