"""FreeU, Rescale CFG, PAG, SAG, NGMS, Skip Early CFG and Dynamic Thresholding on the embedded model: how often a
picture keeps the colour its prompt asks for as the CFG scale rises, with each of them and without, and what each
costs a picture.

    .venv/bin/python -m benchmarks.guidance [--seeds 6] [--runs 5]

"kept" counts pictures whose colour (training/classify.py) is the prompt's, of colours x seeds, prompts "a large
<colour> circle in the center on a white background"; red is the colour that burns first. Seconds are medians of
warm, interleaved runs (``cpu_generate_overhead.interleaved_medians``) of one 64 x 64, 20-step picture.
"""

from __future__ import annotations

from benchmarks.embedded import embedded_engine

COLOURS = ("red", "orange", "blue", "green")
MODES = {"plain": {}, "Rescale CFG 0.7": {"rescale_cfg": 0.7}, "FreeU": {"freeu": True},
         "FreeU version 2": {"freeu": True, "freeu_version": 2}, "PAG 3": {"pag_scale": 3},
         "PAG 3, steps 0.15-0.6": {"pag_scale": 3, "pag_start": 0.15, "pag_end": 0.6}, "SAG 0.75": {"sag_scale": 0.75},
         "NGMS 2": {"s_min_uncond": 2}, "Skip Early CFG 0.2": {"skip_early_cond": 0.2},
         "Dynamic Thresholding 7": {"dynamic_thresholding": True}}


def main(argv: list[str] | None = None) -> None:
    from benchmarks.cpu_generate_overhead import interleaved_medians
    from pipelines.request import GenerationRequest
    from training.classify import classify

    args, engine = embedded_engine(__doc__, argv, seeds=6)

    def picture(colour: str, seed: int, cfg: float, values: dict):
        return engine.generate(GenerationRequest(
            prompt=f"a large {colour} circle in the center on a white background", model="easel-shapes", width=64,
            height=64, steps=20, sampler="Euler a", cfg_scale=cfg, seed=seed, **values)).images[0]

    print(f"kept colour, of {len(COLOURS)} colours x {args.seeds} seeds (red alone in brackets)")
    print(f"| CFG | {' | '.join(MODES)} |")
    print(f"|---|{'---|' * len(MODES)}")
    for cfg in (1, 7, 15, 20, 25):
        cells = []
        for values in MODES.values():
            kept = [[classify(picture(colour, seed, cfg, values)).colour == colour for seed in range(args.seeds)]
                    for colour in COLOURS]
            cells.append(f"{sum(map(sum, kept))} ({sum(kept[0])})")
        print(f"| {cfg} | {' | '.join(cells)} |")
    seconds = interleaved_medians({name: lambda values=values: picture("red", 0, 7, values)
                                   for name, values in MODES.items()}, args.runs)
    print("\n| mode | s a picture |\n|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.3f} |")


if __name__ == "__main__":
    main()
