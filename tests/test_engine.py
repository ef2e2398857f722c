"""The engine on the tiny models: seeds and determinism, batches, previews, interrupt, metadata, outputs."""

import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image

from pipelines.infotext import read_infotext
from pipelines.preview import LatentPreviewer
from pipelines.request import GenerationRequest


def make(**values):
    return GenerationRequest(**{"prompt": "a red circle", "model": "tiny-sd", "width": 64, "height": 64, "steps": 4,
                                "seed": 7, **values})


def pixels(image):
    return np.asarray(image, dtype=np.int16)


def test_same_request_twice_gives_identical_pixels(engine):
    first, second = engine.generate(make()), engine.generate(make())
    assert np.array_equal(pixels(first.images[0]), pixels(second.images[0]))


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ SDE", "DPM++ 2M SDE"])
def test_stochastic_samplers_are_deterministic_too(engine, sampler):
    a, b = engine.generate(make(sampler=sampler)), engine.generate(make(sampler=sampler))
    assert np.array_equal(pixels(a.images[0]), pixels(b.images[0]))


def test_different_seeds_give_different_pictures(engine):
    a, b = engine.generate(make(seed=1)), engine.generate(make(seed=2))
    assert np.abs(pixels(a.images[0]) - pixels(b.images[0])).mean() > 1


def test_batch_image_i_equals_a_single_run_with_seed_plus_i(engine):
    batch = engine.generate(make(seed=20, batch_size=2, batch_count=2))
    assert batch.seeds == [20, 21, 22, 23]
    for i, seed in enumerate(batch.seeds):
        single = engine.generate(make(seed=seed))
        assert np.abs(pixels(batch.images[i]) - pixels(single.images[0])).max() <= 2
        assert f"Seed: {seed}," in batch.infotexts[i]


def test_random_seed_is_drawn_and_recorded(engine):
    result = engine.generate(make(seed=-1))
    assert 0 <= result.request.seed < 2**32
    assert f"Seed: {result.request.seed}," in result.infotexts[0]


def test_prompt_negative_prompt_and_clip_skip_change_the_picture(engine):
    base = pixels(engine.generate(make()).images[0])
    for change in ({"prompt": "a blue square"}, {"negative_prompt": "red"}, {"clip_skip": 2}):
        assert not np.array_equal(base, pixels(engine.generate(make(**change)).images[0])), change


def test_infotext_is_embedded_and_outputs_are_saved(engine):
    result = engine.generate(make(batch_size=2, negative_prompt="blurry"))
    assert len(set(result.paths)) == 2
    for path, text in zip(result.paths, result.infotexts):
        assert path.parent.parent.name == "txt2img-images" and path.name.endswith(f"-{path.stem.split('-')[1]}.png")
        with Image.open(path) as saved:
            assert read_infotext(saved) == text
    assert result.infotexts[0] == (
        "a red circle\nNegative prompt: blurry\nSteps: 4, Sampler: Euler a, CFG scale: 7, Seed: 7, Size: 64x64, "
        f"Model hash: {result.infotexts[0].split('Model hash: ')[1][:10]}, Model: tiny-sd, RNG: CPU, "
        "Version: easel-0.1.0"
    )


def test_progress_reports_every_step_with_previews(engine):
    events = []
    engine.generate(make(steps=4, width=64, height=96), on_progress=events.append)
    assert [e.step for e in events] == [1, 2, 3, 4]
    assert events[-1].fraction == 1.0
    previews = [e.preview for e in events if e.preview is not None]
    assert len(previews) == 1 and previews[0].size == (32, 48)  # every 2 steps, not the last; a pixel per latent


def test_lagging_previews_show_the_previous_latents():
    """As on a CUDA device: each preview is the one started by the call before, so the GPU never waits for it."""
    vae = AutoencoderKL(block_out_channels=[8], norm_num_groups=2, layers_per_block=1, latent_channels=4)
    previewer = LatentPreviewer(vae)
    first, second = (torch.full((1, 4, 3, 5), value) for value in (-1.0, 1.0))
    now, lagging = previewer.pictures(lag=False), previewer.pictures(lag=True)
    assert lagging(first) is None and lagging(second).tobytes() == now(first).tobytes() == previewer(first).tobytes()
    assert now(second).tobytes() == previewer(second).tobytes() != previewer(first).tobytes()


def test_interrupt_stops_after_the_current_step_and_returns_what_is_done(engine):
    steps = []

    def on_progress(event):
        steps.append(event.step)
        if event.step == 2:
            assert engine.interrupt(owner="alice")

    result = engine.generate(make(steps=8, batch_count=3), owner="alice", on_progress=on_progress)
    assert result.interrupted and steps == [1, 2]
    assert len(result.images) == 1 and result.images[0].size == (64, 64)
    assert not engine.busy


def test_interrupt_from_another_owner_is_ignored(engine):
    stopped = []
    result = engine.generate(make(steps=3), owner="alice",
                             on_progress=lambda e: stopped.append(engine.interrupt(owner="mallory")))
    assert not result.interrupted and stopped == [False] * 3


def test_stream_yields_progress_then_result_and_cancels_when_abandoned(engine):
    events = list(engine.stream(make(steps=3)))
    assert [type(e).__name__ for e in events] == ["Progress"] * 3 + ["GenerationResult"]

    finished = threading.Event()
    stream = engine.stream(make(steps=50, batch_count=5))
    next(stream)
    stream.close()  # the browser went away
    with engine._device_lock:  # waits for the job to wind down
        finished.set()
    assert finished.is_set() and not engine.busy


def test_sdxl_architecture_runs(engine):
    result = engine.generate(make(model="tiny-sdxl", sampler="DPM++ 2M", scheduler="Karras", batch_size=2))
    assert len(result.images) == 2 and "Model: tiny-sdxl" in result.infotexts[0]
    assert "Schedule type: Karras" in result.infotexts[0]


def test_unknown_model_is_a_request_error(engine):
    from pipelines.errors import RequestError

    with pytest.raises(RequestError, match="Unknown model 'nope'. Available models: tiny-sd, tiny-sdxl"):
        engine.generate(make(model="nope"))


def test_skip_ends_the_current_batch_and_goes_on_with_the_next(engine):
    seen = []

    def on_progress(event):
        seen.append((event.batch, event.step))
        if (event.batch, event.step) == (0, 2):
            assert engine.skip(owner="alice")

    result = engine.generate(make(steps=5, batch_count=2), owner="alice", on_progress=on_progress)
    assert not result.interrupted and len(result.images) == 2
    assert seen == [(0, 1), (0, 2)] + [(1, step) for step in range(1, 6)]


def test_the_running_job_is_visible_to_its_owner_only(engine):
    checks = []

    def on_progress(event):
        mine = engine.current_job(owner="alice")
        checks.append((mine.progress is event, mine.request.prompt, engine.current_job(owner="bob")))

    engine.generate(make(steps=2), owner="alice", on_progress=on_progress)
    assert checks == [(True, "a red circle", None)] * 2
    assert engine.current_job() is None


def test_out_of_memory_gives_a_message_and_the_next_job_works(engine, monkeypatch):
    import torch

    import pipelines.engine
    from pipelines.errors import ModelError

    real = pipelines.engine.run_pipeline

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(pipelines.engine, "run_pipeline", exhausted)
    with pytest.raises(ModelError, match="Out of memory generating 2 image.s. of 64x64 with tiny-sd. Memory was freed"):
        engine.generate(make(batch_size=2))
    assert not engine.busy
    monkeypatch.setattr(pipelines.engine, "run_pipeline", real)
    assert len(engine.generate(make()).images) == 1


def test_a_variation_seed_turns_the_picture_towards_its_own(engine):
    """A1111's variation seeds: strength 1 starts from the variation seed's noise (with Euler, a deterministic
    sampler, its very picture); a small strength is a small change (with Euler a too: its later noise is still
    the seed's); in a batch image i takes seed + i and variation seed + i."""
    def picture(**values):
        return pixels(engine.generate(make(**values)).images[0])

    for sampler in ("Euler", "Euler a"):
        plain = picture(sampler=sampler)
        assert np.abs(picture(sampler=sampler, subseed=5, subseed_strength=0.01) - plain).mean() < 2  # 0.6
        assert np.abs(picture(sampler=sampler, subseed=5, subseed_strength=0.5) - plain).mean() > 10  # 26-27
    assert np.array_equal(picture(sampler="Euler", subseed=5, subseed_strength=1.0), picture(sampler="Euler", seed=5))
    batch = engine.generate(make(sampler="Euler", subseed=5, subseed_strength=0.5, batch_size=2))
    assert "Seed: 8, Size: 64x64" in batch.infotexts[1] and "Variation seed: 6, Variation seed strength: 0.5," \
        in batch.infotexts[1]
    single = picture(sampler="Euler", seed=8, subseed=6, subseed_strength=0.5)
    assert np.abs(pixels(batch.images[1]) - single).max() <= 2  # a batch computes in another order (one thread)


def test_a_random_variation_seed_is_drawn_and_recorded(engine):
    drawn = engine.generate(make(subseed_strength=0.3))
    assert drawn.request.subseed >= 0 and f"Variation seed: {drawn.request.subseed}," in drawn.infotexts[0]
    assert GenerationRequest.from_infotext(drawn.infotexts[0]).subseed_strength == 0.3


def half_masked(**values):
    """An inpaint request over a two-colour picture, its right half masked."""
    mask = Image.new("L", (64, 64))
    mask.paste(255, (32, 0, 64, 64))
    picture = Image.new("RGB", (64, 64), (200, 30, 30))
    picture.paste((30, 30, 200), (0, 0, 32, 64))
    return make(task="inpaint", init_image=picture, mask=mask, mask_blur=0, sampler="Euler", **values)


@pytest.mark.parametrize("task, strength", [("img2img", 0.75), ("inpaint", 0.75), ("inpaint", 1.0)])
def test_variation_seeds_and_seed_resize_shape_img2img_and_inpaint_noise(engine, task, strength):
    """As in A1111, the noise an img2img or inpaint pass adds is the seed's turned towards the variation seed's (drawn
    as the pipeline draws a seed's: after the picture's encoding); small strengths make small changes, strength 1 is
    the variation seed's picture but for the encoding, which the seed's generator samples (this tiny VAE's samples
    spread wide: mean |diff| 6.9 in img2img, 5.4 inpainting, 0.1 inpainting at full strength, which starts from
    noise alone, against 32-46 between the two seeds' pictures)."""
    def picture(**values):
        request = half_masked(**values) if task == "inpaint" else make(
            task="img2img", init_image=Image.new("RGB", (64, 64), (200, 30, 30)), sampler="Euler", **values)
        return pixels(engine.generate(replace(request, denoising_strength=strength)).images[0])

    def apart(a, b):
        return np.abs(a - b).mean()

    plain, other = picture(), picture(seed=5)
    assert apart(picture(subseed=5, subseed_strength=1.0), other) < apart(plain, other) / 4
    small, half = (apart(picture(subseed=5, subseed_strength=strength), plain) for strength in (0.01, 0.5))
    assert 0 < small < 1 < 10 < half  # 0.5-0.7; 20-28
    assert np.array_equal(picture(seed_resize_from_w=64, seed_resize_from_h=64), plain)  # its own size: off
    assert apart(picture(seed_resize_from_w=32, seed_resize_from_h=32), plain) > 5  # 12-17


def test_the_noise_multiplier_scales_the_noise_added_to_the_picture(engine):
    """A1111's img2img noise multiplier: the scheduler adds the scaled noise; recorded where it is not 1 and read
    back to the same picture. As in A1111 it applies to img2img and inpaint alone."""
    import torch
    from diffusers import EulerDiscreteScheduler
    from types import SimpleNamespace

    from pipelines.variation import shaping

    scheduler = EulerDiscreteScheduler()
    scheduler.set_timesteps(4)
    pipe = SimpleNamespace(scheduler=scheduler, vae_scale_factor=8, unet=SimpleNamespace(config=SimpleNamespace(
        in_channels=4)), vae=SimpleNamespace(config=SimpleNamespace(latent_channels=4)))
    original, noise, step = torch.zeros(1, 4, 8, 8), torch.randn(1, 4, 8, 8), scheduler.timesteps[:1]
    request = make(task="img2img", init_image=Image.new("RGB", (64, 64)), initial_noise_multiplier=0.5)
    with shaping(pipe, request, [7], [], {}, picture=True):
        shaped = scheduler.add_noise(original, noise, step)
    assert torch.allclose(shaped, scheduler.add_noise(original, noise * 0.5, step))
    assert "add_noise" not in vars(scheduler)  # the scheduler's own again

    request = half_masked(initial_noise_multiplier=0.8)
    made = engine.generate(request)
    assert "Noise multiplier: 0.8," in made.infotexts[0]
    assert not np.array_equal(pixels(made.images[0]), pixels(engine.generate(half_masked()).images[0]))
    again = GenerationRequest.from_infotext(made.infotexts[0], model="tiny-sd", task="inpaint",
                                            init_image=request.init_image, mask=request.mask, mask_blur=0)
    assert again.initial_noise_multiplier == 0.8
    assert np.array_equal(pixels(engine.generate(again).images[0]), pixels(made.images[0]))
    assert make(initial_noise_multiplier=0.8).noise_multiplier == 1.0  # txt2img


@pytest.mark.parametrize("sampler", ["Euler", "DDIM"])
def test_extra_noise_is_a1111s_for_either_kind_of_sampler_and_only_at_the_start(sampler):
    """A1111's extra noise: + noise x extra on the noised picture for k-diffusion's samplers, x sqrt(alpha_bar) too
    for DDIM's kind; inpainting's later re-noising of the picture (the same noise) gets none."""
    from types import SimpleNamespace

    from pipelines.samplers import make_scheduler
    from pipelines.variation import shaping

    scheduler = make_scheduler(sampler, "Automatic", {"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                                                      "beta_end": 0.012})
    scheduler.set_timesteps(4)
    pipe = SimpleNamespace(scheduler=scheduler, vae_scale_factor=8, unet=SimpleNamespace(config=SimpleNamespace(
        in_channels=4)), vae=SimpleNamespace(config=SimpleNamespace(latent_channels=4)))
    original, noise, step = torch.zeros(1, 4, 8, 8), torch.randn(1, 4, 8, 8), scheduler.timesteps[:1]
    alpha_bar = float(scheduler.alphas_cumprod[int(step)])
    sigma = ((1 - alpha_bar) / alpha_bar) ** 0.5
    request = make(task="img2img", init_image=Image.new("RGB", (64, 64)), img2img_extra_noise=0.5)
    with shaping(pipe, request, [7], [], {}, picture=True):
        started, renoised = (scheduler.add_noise(original, noise, step) for _ in range(2))
    if sampler == "Euler":  # k-diffusion's: x + noise x sigma + noise x extra
        assert torch.allclose(started, noise * (sigma + 0.5), atol=1e-5)
    else:  # DDIM's: x sqrt(alpha_bar) + noise sqrt(1 - alpha_bar) + noise x extra x sqrt(alpha_bar)
        assert torch.allclose(started, noise * ((1 - alpha_bar) ** 0.5 + 0.5 * alpha_bar ** 0.5), atol=1e-5)
    assert torch.allclose(renoised, scheduler.add_noise(original, noise, step))


def test_extra_noise_changes_img2img_and_hires_passes_and_reads_back(engine):
    """Recorded where a pass adds noise to a picture, and read back to the same picture; inpainting at full strength
    starts from noise alone and takes none."""
    img2img = make(task="img2img", init_image=Image.new("RGB", (64, 64), (200, 30, 30)))
    for request in (img2img, make(enable_hr=True, hr_scale=1.5, denoising_strength=0.5)):
        plain, extra = (engine.generate(replace(request, img2img_extra_noise=value)) for value in (0, 0.4))
        assert np.abs(pixels(plain.images[0]) - pixels(extra.images[0])).mean() > 1
        assert "Extra noise: 0.4," in extra.infotexts[0] and "Extra noise" not in plain.infotexts[0]
    again = GenerationRequest.from_infotext(extra.infotexts[0], model="tiny-sd")
    assert again.img2img_extra_noise == 0.4
    assert np.array_equal(pixels(engine.generate(again).images[0]), pixels(extra.images[0]))
    full = half_masked(denoising_strength=1.0)
    plain, extra = (engine.generate(replace(full, img2img_extra_noise=value)) for value in (0, 0.4))
    assert np.array_equal(pixels(plain.images[0]), pixels(extra.images[0])) and "Extra" not in extra.infotexts[0]
    assert "Extra noise" not in engine.generate(make(img2img_extra_noise=0.4)).infotexts[0]  # txt2img alone


# (sampler, its parameters, whether it draws noise as it samples)
NOISE_DRAWN = [("Euler a", {}, True), ("Euler a", {"eta_ancestral": 0.0}, False), ("Euler", {}, False),
               ("Euler", {"s_churn": 3.0}, True), ("LMS", {}, False), ("Heun", {}, False), ("DPM2", {}, False),
               ("DPM2 a", {}, True), ("DPM++ 2M", {}, False), ("DPM++ SDE", {}, False), ("DPM++ 2M SDE", {}, True),
               ("DDIM", {}, False), ("DDIM", {"eta_ddim": 1.0}, True), ("DDPM", {}, True), ("PLMS", {}, False),
               ("UniPC", {}, False), ("DEIS", {}, False), ("LCM", {}, True)]


@pytest.mark.parametrize("sampler, values, noisy", NOISE_DRAWN)
def test_ensd_changes_the_pictures_of_the_samplers_that_draw_noise_and_only_theirs(engine, sampler, values, noisy):
    """A1111's eta noise seed delta: recorded where it changed the picture, and only there (DPM++ SDE draws its
    noise from the seeds, as A1111's)."""
    plain = engine.generate(make(sampler=sampler, **values))
    moved = engine.generate(make(sampler=sampler, eta_noise_seed_delta=31337, **values))
    assert (not np.array_equal(pixels(plain.images[0]), pixels(moved.images[0]))) == noisy
    assert ("ENSD: 31337," in moved.infotexts[0]) == noisy


def test_ensd_reseeds_each_generator_as_the_sampler_takes_its_first_step(engine):
    """As A1111's noise source: what the pipeline draws before sampling (the starting noise) is the seed's, every
    draw from the first step on seed + delta's, each picture of a batch its own; read back to the same picture; in
    img2img too."""
    import inspect
    from types import SimpleNamespace

    from pipelines.variation import reseeded

    class Drawing:  # a scheduler whose step draws from each picture's generator
        def step(self, sample, generator=None):
            return [torch.randn(3, generator=each) for each in generator]

    scheduler, seeds = Drawing(), [7, 8]
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    with reseeded(SimpleNamespace(scheduler=scheduler), make(sampler="Euler a", eta_noise_seed_delta=100), seeds,
                  generators):
        assert "generator" in inspect.signature(scheduler.step).parameters  # pipelines pass it where it is read
        start = [torch.randn(3, generator=each) for each in generators]
        first, second = scheduler.step(None, generator=generators), scheduler.step(None, generator=generators)
    assert "step" not in vars(scheduler)
    for i, seed in enumerate(seeds):
        assert torch.equal(start[i], torch.randn(3, generator=torch.Generator().manual_seed(seed)))
        moved = torch.Generator().manual_seed(seed + 100)
        assert torch.equal(first[i], torch.randn(3, generator=moved))
        assert torch.equal(second[i], torch.randn(3, generator=moved))

    batch = engine.generate(make(sampler="Euler a", eta_noise_seed_delta=100, batch_size=2))
    single = engine.generate(make(sampler="Euler a", eta_noise_seed_delta=100, seed=8))
    assert np.abs(pixels(batch.images[1]) - pixels(single.images[0])).max() <= 2
    again = GenerationRequest.from_infotext(single.infotexts[0], model="tiny-sd")
    assert again.eta_noise_seed_delta == 100
    assert np.array_equal(pixels(engine.generate(again).images[0]), pixels(single.images[0]))
    redrawn = make(task="img2img", init_image=Image.new("RGB", (64, 64), (200, 30, 30)), sampler="Euler a")
    plain, moved = (engine.generate(replace(redrawn, eta_noise_seed_delta=delta)) for delta in (0, 100))
    assert not np.array_equal(pixels(plain.images[0]), pixels(moved.images[0])) and "ENSD: 100," in moved.infotexts[0]


def test_grids_are_saved_where_a1111_keeps_them(engine):
    from pipelines.grid import Grid

    grid = Image.new("RGB", (8, 8))
    assert engine.save_grids([Grid(grid, "a\nSteps: 1")], "txt2img")[0].parent.parent.name == "txt2img-grids"
    first, second = engine.save_grids([Grid(grid, "a\nSteps: 1"), Grid(grid, "b\nSteps: 2")], "inpaint")
    assert first.parent.parent.name == "img2img-grids" and read_infotext(Image.open(first)) == "a\nSteps: 1"
    assert first != second and read_infotext(Image.open(second)) == "b\nSteps: 2"
    assert first.name == "grid-0000.png" and second.name == "grid-0001.png"  # A1111's names
    # a script's grid is named in full (its first picture's seed by the images' pattern), a job's with
    # A1111's grid_extended_filename
    seeded = "a\nSteps: 1, Sampler: Euler, Seed: 5, Size: 8x8"
    [plot] = engine.save_grids([Grid(grid, seeded, basename="xyz_grid")], "txt2img")
    assert plot.name == "xyz_grid-0000-5.png"
    engine.grid_extended = True
    try:
        assert engine.save_grids([Grid(grid, seeded)], "txt2img")[0].name == "grid-0001-5.png"
    finally:
        engine.grid_extended = False
    engine.grid_writer.enabled = False  # A1111's grid_save off
    try:
        assert engine.save_grids([Grid(grid, "c\nSteps: 1")], "txt2img") == [None]
    finally:
        engine.grid_writer.enabled = True


def test_latents_that_become_nan_are_a_message_not_a_black_picture(engine):
    """A1111's NaN check: a CFG scale past what float32 holds makes NaN latents, which decoded as black."""
    from pipelines.errors import ModelError

    with pytest.raises(ModelError, match="became NaN .* Lower them"):
        engine.generate(make(cfg_scale=1e308))
    assert not engine.busy and not list(engine.writer.root.rglob("*.png"))  # nothing saved
    assert pixels(engine.generate(make()).images[0]).std() > 0


def test_a_streamed_job_runs_in_the_callers_context(engine, monkeypatch):
    """What tracks progress in the caller (Gradio's tqdm tracking of a Hub download) sees inside the job."""
    import contextvars

    marker = contextvars.ContextVar("marker", default="not seen")
    marker.set("the caller's")
    seen, lease = [], engine.registry.lease

    def spying_lease(*args, **kwargs):
        seen.append(marker.get())
        return lease(*args, **kwargs)

    monkeypatch.setattr(engine.registry, "lease", spying_lease)
    list(engine.stream(GenerationRequest(prompt="x", steps=1, width=64, height=64)))
    assert seen and set(seen) == {"the caller's"}


def test_loading_a_model_takes_the_device_lock(engine, monkeypatch):
    """A load from the Models tab or A1111's options waits for the job on the device, as a job does: a compiled
    model's load runs pictures (--compile-sizes)."""
    from contextlib import contextmanager

    held, real = [], engine.registry.lease

    def free_elsewhere() -> bool:  # the lock is reentrant: another thread tells whether it is held
        taken = []

        def probe():
            taken.append(engine._device_lock.acquire(blocking=False))
            if taken[0]:
                engine._device_lock.release()
        thread = threading.Thread(target=probe)
        thread.start()
        thread.join()
        return taken[0]

    @contextmanager
    def lease(name):
        held.append(not free_elsewhere())
        with real(name) as model:
            yield model

    monkeypatch.setattr(engine.registry, "lease", lease)
    assert engine.load("tiny-sd") == "tiny-sd" and held == [True]


def test_seed_resize_puts_the_noise_of_another_size_in_the_middle():
    """A1111's "Resize seed from": the starting noise's middle is the noise the seed gives at that size (cropped
    to its middle when that size is the larger), the rest the seed's own at the picture's size."""
    import torch
    from types import SimpleNamespace

    from pipelines.variation import starting_noise

    pipe = SimpleNamespace(vae_scale_factor=8, unet=SimpleNamespace(dtype=torch.float32),
                           vae=SimpleNamespace(config=SimpleNamespace(latent_channels=4)))

    def noise(width, height, **values):
        request = make(width=width, height=height, **values)
        return starting_noise(pipe, request, [7], [torch.Generator("cpu").manual_seed(7)], (width, height))

    small, wide = noise(64, 64), noise(96, 64)
    resized = noise(96, 64, seed_resize_from_w=64, seed_resize_from_h=64)
    assert torch.equal(resized[..., 2:10], small) and torch.equal(resized[..., :2], wide[..., :2])
    assert torch.equal(noise(64, 64, seed_resize_from_w=96, seed_resize_from_h=64), wide[..., 2:10])
    assert torch.equal(noise(64, 64, seed_resize_from_w=64, seed_resize_from_h=64), small)  # its own size: off


def test_seed_resize_changes_the_picture_and_is_recorded(engine):
    from pipelines.errors import RequestError

    plain = engine.generate(make(width=96))
    resized = engine.generate(make(width=96, seed_resize_from_w=64, seed_resize_from_h=64))
    assert np.abs(pixels(plain.images[0]) - pixels(resized.images[0])).mean() > 1
    assert "Size: 96x64, " in resized.infotexts[0] and "Seed resize from: 64x64," in resized.infotexts[0]
    again = engine.generate(GenerationRequest.from_infotext(resized.infotexts[0], model="tiny-sd"))
    assert np.array_equal(pixels(again.images[0]), pixels(resized.images[0]))
    own = engine.generate(make(seed_resize_from_w=64, seed_resize_from_h=64))
    assert np.array_equal(pixels(own.images[0]), pixels(engine.generate(make()).images[0]))
    assert "Seed resize from" not in own.infotexts[0]
    for values in ({"seed_resize_from_w": 64}, {"seed_resize_from_w": 60, "seed_resize_from_h": 64}):
        with pytest.raises(RequestError) as refused:
            make(**values)
        assert refused.value.field == "seed_resize_from_w"
