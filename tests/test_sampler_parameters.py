"""A1111's sampler parameters (pipelines/sampler_parameters.py): eta, sigma churn, the schedule's sigmas, the noise
schedule and UniPC's, read by the samplers that take them, on the schedulers themselves and through the engine on the
embedded model."""

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler

from pipelines.errors import RequestError
from pipelines.infotext import parse_infotext
from pipelines.request import GenerationRequest
from pipelines.sampler_parameters import SETTINGS, ZERO_SNR_SAMPLERS, infotext, unapplied, used
from pipelines.samplers import make_scheduler
from pipelines.xyz import AXES

ROOT = Path(__file__).resolve().parent.parent
MODEL = "easel-shapes"
BASE = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              steps_offset=1).config


def steps_of(scheduler, eta_seed: int = 5) -> torch.Tensor:
    """The scheduler's first step from fixed latents and a fixed prediction, its noise from ``eta_seed``."""
    scheduler.set_timesteps(10)
    sample, prediction = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1)).unbind(0)
    sample, prediction = sample[None] * scheduler.init_noise_sigma, prediction[None]
    scheduler.scale_model_input(sample, scheduler.timesteps[0])
    return scheduler.step(prediction, scheduler.timesteps[0], sample,
                          generator=torch.Generator().manual_seed(eta_seed)).prev_sample


def test_euler_a_at_eta_1_is_diffusers_own_and_at_eta_0_is_euler():
    plain = steps_of(make_scheduler("Euler a", "Automatic", BASE))
    assert torch.equal(steps_of(make_scheduler("Euler a", "Automatic", BASE, parameters={"eta_ancestral": 1.0})), plain)
    deterministic = steps_of(make_scheduler("Euler a", "Automatic", BASE, parameters={"eta_ancestral": 0.0}))
    assert torch.allclose(deterministic, steps_of(make_scheduler("Euler", "Automatic", BASE)), atol=1e-6)
    half = steps_of(make_scheduler("Euler a", "Automatic", BASE, parameters={"eta_ancestral": 0.5}))
    assert not torch.allclose(half, plain) and not torch.allclose(half, deterministic)
    assert torch.equal(half, steps_of(make_scheduler("Euler a", "Automatic", BASE, parameters={"eta_ancestral": 0.5})))


def test_ddim_eta_and_euler_churn_reach_the_step():
    ddim = make_scheduler("DDIM", "Automatic", BASE, parameters={"eta_ddim": 1.0})
    assert type(ddim).__name__ == "DDIMScheduler" and ddim.config == make_scheduler("DDIM", "Automatic", BASE).config
    assert not torch.allclose(steps_of(ddim), steps_of(make_scheduler("DDIM", "Automatic", BASE)))
    assert torch.equal(steps_of(ddim, eta_seed=2), steps_of(make_scheduler("DDIM", "Automatic", BASE,
                                                                           parameters={"eta_ddim": 1.0}), eta_seed=2))
    churned = steps_of(make_scheduler("Euler", "Automatic", BASE, parameters={"s_churn": 5.0}))
    assert not torch.allclose(churned, steps_of(make_scheduler("Euler", "Automatic", BASE)))
    # churn only between tmin and tmax: the first step's sigma (14.6) is over a tmax of 1
    limited = make_scheduler("Euler", "Automatic", BASE, parameters={"s_churn": 5.0, "s_tmax": 1.0})
    assert torch.equal(steps_of(limited), steps_of(make_scheduler("Euler", "Automatic", BASE)))


def test_the_schedules_sigma_range_and_rho():
    def sigmas(schedule: str, sampler: str = "Euler", **parameters) -> np.ndarray:
        scheduler = make_scheduler(sampler, schedule, BASE, seeds=[1], parameters=parameters)
        scheduler.set_timesteps(10)
        return scheduler.sigmas.numpy()

    karras = sigmas("Karras")
    assert karras[0] == pytest.approx(14.6146, abs=1e-3) and karras[-2] == pytest.approx(0.0292, abs=1e-3)
    ranged = sigmas("Karras", sigma_min=0.1, sigma_max=5.0)
    assert ranged[0] == pytest.approx(5.0) and ranged[-2] == pytest.approx(0.1)
    steep, flat = sigmas("Karras", rho=14.0), sigmas("Karras", rho=2.0)
    assert steep[0] == flat[0] == pytest.approx(karras[0]) and steep[1] < karras[1] < flat[1]
    assert sigmas("Exponential", "LMS", sigma_max=3.0)[0] == pytest.approx(3.0)  # other schedulers too
    assert sigmas("Karras", "DPM++ SDE", sigma_max=4.0)[0] == pytest.approx(4.0)
    with pytest.raises(RequestError, match="Schedule min sigma \\(20\\) must be under the max sigma") as caught:
        sigmas("Karras", sigma_min=20.0)  # over the model's max
    assert caught.value.field == "sigma_min"


def test_zero_terminal_snr_rescales_the_betas_where_the_scheduler_can():
    from pipelines.samplers import SAMPLERS, _accepts

    assert set(ZERO_SNR_SAMPLERS) == {name for name, sampler in SAMPLERS.items()  # diffusers' own list
                                      if _accepts(sampler.scheduler_class, {"rescale_betas_zero_snr": True})}
    for sampler in ("Euler", "DDIM"):
        rescaled = make_scheduler(sampler, "Automatic", BASE, parameters={"noise_schedule": "Zero Terminal SNR"})
        assert rescaled.config.rescale_betas_zero_snr is True and float(rescaled.alphas_cumprod[-1]) < 1e-6
        assert float(make_scheduler(sampler, "Automatic", BASE).alphas_cumprod[-1]) > 1e-3
    zero_snr = GenerationRequest(prompt="x", sampler="Euler", noise_schedule="Zero Terminal SNR")
    assert infotext(zero_snr) == {"Noise Schedule": "Zero Terminal SNR"}
    assert GenerationRequest.from_infotext(zero_snr.infotext(1, "m")).noise_schedule == "Zero Terminal SNR"
    assert unapplied(GenerationRequest(sampler="Heun", noise_schedule="Zero Terminal SNR")) == [
        "Heun runs here with the model's noise schedule: Zero Terminal SNR is not applied."]
    with pytest.raises(RequestError, match="Noise schedule must be one of Default, Zero Terminal SNR") as caught:
        GenerationRequest(noise_schedule="zero")
    assert caught.value.field == "noise_schedule"


def test_unipc_takes_a1111s_variant_order_and_lower_order_final():
    own = make_scheduler("UniPC", "Automatic", BASE)  # A1111's defaults, not diffusers' (bh2, order 2)
    assert (own.config.solver_type, own.config.solver_order, own.config.lower_order_final) == ("bh1", 3, True)
    own.set_timesteps(10)
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * own.init_noise_sigma
    for timestep in own.timesteps:
        sample = own.step(sample * 0.1, timestep, sample).prev_sample
    assert torch.isfinite(sample).all()  # bh1 needs the last step to end above zero noise
    request = GenerationRequest(prompt="x", sampler="UniPC", uni_pc_variant="bh2", uni_pc_order=2,
                                uni_pc_lower_order_final=False)
    tuned_config = make_scheduler("UniPC", "Automatic", BASE, parameters=used(request)).config
    assert (tuned_config.solver_type, tuned_config.solver_order, tuned_config.lower_order_final) == ("bh2", 2, False)
    assert infotext(request) == {"UniPC variant": "bh2", "UniPC order": 2, "UniPC lower order final": False}
    back = GenerationRequest.from_infotext(request.infotext(1, "m"))
    assert (back.uni_pc_variant, back.uni_pc_order, back.uni_pc_lower_order_final) == ("bh2", 2, False)
    assert infotext(GenerationRequest(sampler="Euler", uni_pc_order=2)) == {}  # UniPC's alone
    assert AXES["UniPC Order"].apply(request, 1) == {"uni_pc_order": 1}
    with pytest.raises(RequestError, match="UniPC variant must be one of bh1, bh2; got 'vary_coeff'"):
        GenerationRequest(uni_pc_variant="vary_coeff")
    with pytest.raises(RequestError, match="UniPC order must be between 1 and 50"):
        GenerationRequest(uni_pc_order=0)


def test_what_each_sampler_reads_goes_into_the_infotext():
    def request(sampler: str, scheduler: str = "Automatic", **values) -> GenerationRequest:
        return GenerationRequest(sampler=sampler, scheduler=scheduler, **values)

    changed = {"eta_ddim": 0.5, "eta_ancestral": 0.25, "s_churn": 2.0, "s_noise": 1.0, "sigma_max": 9.0, "rho": 3.0}
    assert infotext(request("Euler a", **changed)) == {"Eta": 0.25}
    assert infotext(request("DDIM", **changed)) == {"Eta DDIM": 0.5}
    assert used(request("Euler", **changed)) == {"s_churn": 2.0}  # s_noise at its default
    assert infotext(request("DPM++ 2M", "Karras", **changed)) == {"Schedule max sigma": 9.0, "Schedule rho": 3.0}
    assert infotext(request("DPM++ 2M", "Exponential", **changed)) == {"Schedule max sigma": 9.0}
    assert infotext(request("UniPC", **changed)) == {}
    assert unapplied(request("Heun", **changed)) == [
        "Heun runs here as at Sigma churn 0: the 2 asked for is not applied."]
    assert unapplied(request("DPM++ 2M SDE", **changed)) == [
        "DPM++ 2M SDE runs here as at Eta for k-diffusion samplers 1: the 0.25 asked for is not applied."]
    assert unapplied(request("Euler a", **changed)) == []
    hires = request("Euler a", **changed, enable_hr=True, hr_sampler_name="DDIM")  # its second pass's sampler too
    assert infotext(hires) == {"Eta": 0.25, "Eta DDIM": 0.5}
    assert used(hires.hires_pass()) == {"eta_ddim": 0.5}
    assert infotext(request("Euler a", eta_noise_seed_delta=9)) == {"ENSD": 9}  # where a pass draws noise
    assert infotext(request("Euler", eta_noise_seed_delta=9)) == {}
    assert infotext(request("Euler", eta_noise_seed_delta=9, enable_hr=True, hr_sampler_name="DPM2 a")) == {"ENSD": 9}


def test_the_request_checks_them_and_reads_them_from_an_infotext():
    with pytest.raises(RequestError, match="Eta for DDIM must be between 0 and 1") as caught:
        GenerationRequest(eta_ddim=2)
    assert caught.value.field == "eta_ddim"
    with pytest.raises(RequestError, match="Schedule min sigma \\(3\\) must be under the max sigma \\(2\\)"):
        GenerationRequest(sigma_min=3, sigma_max=2)
    text = GenerationRequest(prompt="x", sampler="DPM++ 2M", scheduler="Karras", sigma_min=0.05, rho=4).infotext(1, "m")
    assert "Schedule min sigma: 0.05, Schedule rho: 4," in text
    back = GenerationRequest.from_infotext(text)
    assert (back.sigma_min, back.rho, back.sigma_max) == (0.05, 4.0, 0.0)
    eta = GenerationRequest.from_infotext("x\nSteps: 5, Sampler: Euler a, Eta: 0.3, Eta DDIM: 0.6")
    assert (eta.eta_ancestral, eta.eta_ddim) == (0.3, 0.6)


def test_xyz_axes_set_them_as_a1111s_do():
    request = GenerationRequest()
    assert AXES["Eta"].apply(request, 0.4) == {"eta_ddim": 0.4, "eta_ancestral": 0.4}
    assert AXES["Sigma min"].apply(request, 1.0) == {"s_tmin": 1.0}  # A1111's: the churn's bounds
    assert AXES["Schedule rho"].apply(request, 3.0) == {"rho": 3.0}
    names = ("Eta", "Sigma Churn", "Sigma min", "Sigma max", "Sigma noise", "Schedule min sigma", "Schedule max sigma",
             "Schedule rho")
    assert {name for axis in names for name in AXES[axis].apply(request, 0.5)} == {s.field for s in SETTINGS}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    if not (ROOT / "models" / "Stable-diffusion" / MODEL / "model_index.json").is_file():
        pytest.skip("the embedded model is not in models/")
    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter
    from pipelines.registry import Registry

    return Engine(Registry(ROOT / "models"), OutputWriter(tmp_path_factory.mktemp("out"), enabled=False))


def paint(engine, sampler: str, **values):
    request = GenerationRequest(prompt="a red circle on a white background", model=MODEL, width=64, height=64,
                                steps=16, sampler=sampler, cfg_scale=7, seed=11, **values)
    result = engine.generate(request)
    return np.asarray(result.images[0], dtype=np.int16), result


def test_on_the_embedded_model_euler_a_at_eta_0_paints_eulers_picture(engine):
    from training.classify import classify

    euler, _ = paint(engine, "Euler")
    ancestral, _ = paint(engine, "Euler a")
    quiet, result = paint(engine, "Euler a", eta_ancestral=0.0)
    assert np.abs(quiet - euler).max() <= 1 and np.abs(ancestral - euler).max() > 16
    assert parse_infotext(result.infotexts[0])[2]["Eta"] == "0"
    half, _ = paint(engine, "Euler a", eta_ancestral=0.5)
    assert np.abs(half - euler).max() > 16 and np.abs(half - ancestral).max() > 16
    from PIL import Image

    for picture in (quiet, half):  # still the picture asked for
        found = classify(Image.fromarray(picture.astype(np.uint8)))
        assert (found.colour, found.shape) == ("red", "circle"), found


def test_on_the_embedded_model_ddim_paints_the_prompt_at_either_eta(engine):
    """DDIM's picture is the prompt's (diffusers' default clipping of its prediction turned the background green),
    and eta 1 draws another one, still the prompt's."""
    from PIL import Image

    from training.classify import classify

    plain, _ = paint(engine, "DDIM")
    noisy, result = paint(engine, "DDIM", eta_ddim=1.0)
    assert "Eta DDIM: 1," in result.infotexts[0] and np.abs(plain - noisy).max() > 16
    for picture in (plain, noisy):
        found = classify(Image.fromarray(picture.astype(np.uint8)))
        assert (found.colour, found.shape, found.background) == ("red", "circle", "white"), found


def test_on_the_embedded_model_a_sampler_that_cannot_read_one_warns(engine):
    plain, _ = paint(engine, "Heun")
    churned, result = paint(engine, "Heun", s_churn=3.0)
    assert np.array_equal(plain, churned)
    assert result.warnings == ["Heun runs here as at Sigma churn 0: the 3 asked for is not applied."]
    assert "Sigma churn" not in result.infotexts[0]
    euler, _ = paint(engine, "Euler")
    churned, result = paint(engine, "Euler", s_churn=3.0)
    assert result.warnings == [] and "Sigma churn: 3," in result.infotexts[0]
    assert np.abs(churned - euler).max() > 16
