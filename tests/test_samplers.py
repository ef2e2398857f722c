"""The A1111 sampler map: every name builds its diffusers scheduler with the right options."""

import pytest
from diffusers import EulerDiscreteScheduler

from pipelines.samplers import SAMPLERS, make_scheduler, normalize

BASE = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              steps_offset=1, prediction_type="v_prediction").config

REQUIRED = ["Euler a", "Euler", "DPM++ 2M", "DPM++ 2M Karras", "DPM++ SDE Karras", "DPM++ 2M SDE", "DDIM", "UniPC",
            "LMS", "Heun", "DPM2", "LCM"]


@pytest.mark.parametrize("name", REQUIRED)
def test_each_a1111_name_builds_its_scheduler(name):
    sampler, schedule = normalize(name)
    scheduler = make_scheduler(sampler, schedule, BASE, seeds=[1])
    assert type(scheduler).__name__ == SAMPLERS[sampler].scheduler_class
    assert scheduler.config.prediction_type == "v_prediction"  # the model's own config is kept
    scheduler.set_timesteps(10)
    assert len(scheduler.timesteps) >= 10


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_listed_sampler_builds(name):
    make_scheduler(name, "Automatic", BASE, seeds=[1]).set_timesteps(5)


def test_options_reach_the_scheduler():
    assert make_scheduler("DPM++ 2M", "Karras", BASE).config.use_karras_sigmas is True
    assert make_scheduler("DPM++ 2M SDE", "Automatic", BASE).config.algorithm_type == "sde-dpmsolver++"
    assert make_scheduler("DPM++ 2M", "Automatic", BASE).config.algorithm_type == "dpmsolver++"
    assert make_scheduler("Euler", "SGM Uniform", BASE).config.timestep_spacing == "trailing"
    assert make_scheduler("DPM++ SDE", "Automatic", BASE, seeds=[7, 8]).config.noise_sampler_seed == [7, 8]
    # A1111's DDIM and DDPM do not clip the predicted picture, whatever the model's config leaves out
    assert make_scheduler("DDIM", "Automatic", BASE).config.clip_sample is False
    assert make_scheduler("DDPM", "Automatic", BASE).config.clip_sample is False


def test_a_fresh_scheduler_each_time():
    assert make_scheduler("Euler a", "Automatic", BASE) is not make_scheduler("Euler a", "Automatic", BASE)
