"""A1111's sampler parameters on the embedded model: how often a picture is the colour and shape its prompt asks for
with each setting, how far it moves from the sampler's own picture, and what each costs a picture.

    .venv/bin/python -m benchmarks.sampler_parameters [--seeds 4] [--runs 5]

Prompts "a <colour> <shape> on a white background" over 3 colours x 3 shapes x the seeds, 64 x 64, 20 steps, CFG 7;
"right" counts pictures whose colour and shape (training/classify.py) are the prompt's; "moved" is the mean absolute
difference in pixel values (0-255) from the same sampler's picture without the setting. Seconds are medians of warm,
interleaved runs (``cpu_generate_overhead.interleaved_medians``) of one picture.
"""

from __future__ import annotations

from benchmarks.embedded import embedded_engine

COLOURS, SHAPES = ("red", "blue", "green"), ("circle", "square", "triangle")
# (sampler, schedule type, the setting's request fields)
MODES = {
    "Euler a": ("Euler a", "Automatic", {}),
    "Euler a, eta 0.5": ("Euler a", "Automatic", {"eta_ancestral": 0.5}),
    "Euler a, eta 0": ("Euler a", "Automatic", {"eta_ancestral": 0.0}),
    "Euler a, ENSD 31337": ("Euler a", "Automatic", {"eta_noise_seed_delta": 31337}),
    "DDIM": ("DDIM", "Automatic", {}),
    "DDIM, eta 1": ("DDIM", "Automatic", {"eta_ddim": 1.0}),
    "Euler": ("Euler", "Automatic", {}),
    "Euler, churn 3": ("Euler", "Automatic", {"s_churn": 3.0}),
    "DPM++ 2M Karras": ("DPM++ 2M", "Karras", {}),
    "DPM++ 2M Karras, rho 3": ("DPM++ 2M", "Karras", {"rho": 3.0}),
    "DPM++ 2M Karras, max sigma 5": ("DPM++ 2M", "Karras", {"sigma_max": 5.0}),
    "DPM++ 2M Karras, ENSD 31337": ("DPM++ 2M", "Karras", {"eta_noise_seed_delta": 31337}),
    "Euler, zero terminal SNR": ("Euler", "Automatic", {"noise_schedule": "Zero Terminal SNR"}),
    "UniPC (A1111's bh1, order 3)": ("UniPC", "Automatic", {}),
    "UniPC, bh2 order 2 (diffusers')": ("UniPC", "Automatic", {"uni_pc_variant": "bh2", "uni_pc_order": 2}),
}


def main(argv: list[str] | None = None) -> None:
    import numpy as np

    from benchmarks.cpu_generate_overhead import interleaved_medians
    from pipelines.request import GenerationRequest
    from training.classify import classify

    args, engine = embedded_engine(__doc__, argv, seeds=4)

    def picture(mode: str, colour: str = "red", shape: str = "circle", seed: int = 0, own: bool = False):
        sampler, schedule, values = MODES[mode]
        return engine.generate(GenerationRequest(
            prompt=f"a {colour} {shape} on a white background", model="easel-shapes", width=64, height=64, steps=20,
            sampler=sampler, scheduler=schedule, cfg_scale=7, seed=seed, **({} if own else values))).images[0]

    cases = [(colour, shape, seed) for colour in COLOURS for shape in SHAPES for seed in range(args.seeds)]
    print(f"| mode | right, of {len(cases)} | moved |\n|---|---|---|")
    for mode in MODES:
        right, moved = 0, []
        for colour, shape, seed in cases:
            made = picture(mode, colour, shape, seed)
            found = classify(made)
            right += (found.colour, found.shape) == (colour, shape)
            own = np.asarray(picture(mode, colour, shape, seed, own=True), dtype=float)
            moved.append(np.abs(np.asarray(made, dtype=float) - own).mean())
        print(f"| {mode} | {right} | {np.mean(moved):.1f} |")
    seconds = interleaved_medians({mode: lambda mode=mode: picture(mode) for mode in MODES}, args.runs)
    print("\n| mode | s a picture |\n|---|---|")
    for mode, value in seconds.items():
        print(f"| {mode} | {value:.3f} |")


if __name__ == "__main__":
    main()
