"""GPU speed: plain diffusers vs Easel's path, optimisation by optimisation, on random-weight models of real size.

    .venv/bin/python -m benchmarks.gpu_speed [--models sd15 sdxl koala_1b koala_700m kandinsky22] [--repeats 5]
                                             [--no-compile] [--warm-up] [--quick | --only PREFIX ...]
    .venv/bin/python -m benchmarks.gpu_speed --tiny        # tiny configs on the CPU: checks the harness, not speed

Each model (``random_pipelines``: SD 1.5 at 512², SDXL, KOALA-1B and KOALA-700M at 1024² with Euler and CFG 7;
Kandinsky 2.2's decoder at 768² with DDPM and CFG 4) is built on the device and saved once to ``--cache-dir``, so
every load reads files. Then, in one process with one seed and prompt, each configuration of the ladder loads it
and generates:

- ``diffusers fp16``: what a model card shows (``from_pretrained(dtype=fp16).to("cuda")``, the pipeline's own
  scheduler, default attention, a CPU generator so the noise matches Easel's; for Kandinsky its prior, then its
  decoder, each with its own generator);
- ``easel fp16``: the same through Easel's Registry and Engine (prompt cache, live previews every 5 steps);
- ``+ bf16``, ``+ channels-last``, ``+ fused QKV`` (the app's ``--fast``), on CUDA ``+ cuDNN attention``,
  ``+ compile`` (``--compile``, on ``--fast``), on CUDA ``+ CUDA graphs, cuDNN attention`` (``--compile-mode
  reduce-overhead``), each adding one optimisation, so each one's gain and error show separately; on CUDA also
  ``--fast, medvram``;
- the fast modes, each on top of ``--fast`` and not exact: ``step cache 3`` (DeepCache-style, ``step_cache.py``),
  ``--weights int8`` and ``--weights fp8`` (weight-only storage, ``quantize.py``; the UNet MiB column shows the
  memory they save), ``--weights int8-fast`` and ``--weights fp8-fast`` (the Linear layers also multiply in 8 bits);
- the guidance settings, each on top of ``--fast``: ``Rescale CFG 0.7``, ``FreeU``, ``PAG 3``, ``NGMS 2`` and
  ``Skip Early CFG 0.2`` (``cfg_rescale.py``, ``freeu.py``, ``pag.py``, ``negative_guidance.py``); a model that
  refuses one (Kandinsky 2.2 all but NGMS and Skip Early CFG, KOALA-700M PAG) has no row for it.

``--with compile=true compile_mode=reduce-overhead`` (any SpeedOptions fields) sets options on every Easel row,
named in the row: the fast modes compiled, say. Kandinsky 2.2's decoder gets every row; its attention layers
project their added keys and values apart, so fused QKV leaves them as they are (``+ fused QKV`` is ``--fast``
there, and equals ``+ channels-last``).

Per row: median seconds per image over ``--repeats`` after warm-up (full path, decoded picture), it/s and seconds of
denoising (prompt to latents) and of VAE decoding, peak CUDA memory, load time, the first call (cold compile for the
compiled rows: each row compiles into an empty inductor cache of its own), for the compiled rows the first call after
a restart (Dynamo's and inductor's memory emptied, the kernels the row wrote to disk kept, as the app keeps them in
``.cache/torchinductor``), one live preview's cost as a share of one step's time (Easel's rows; the app previews every
5th step), the ratio to the FLOP floor (UNet FLOPs per forward from architectures.json x steps x 2 for CFG, over the
dense bf16 matmul rate measured here), and two relative errors against the baseline: ``step err``, of one UNet call on
the same seeded inputs (each optimisation's own error), and ``latents err``, of the final latents. With random weights
a whole trajectory is chaotic, so any rounding change (fp16 to bf16) ends in unrelated latents (about 1.4, unrelated
noise) on the GPU; trained models' trajectory errors are in ``fast_modes.py``. A non-finite value fails the run; so
does a row that raises (its error is printed and the ladder goes on). On the CPU the app applies none of this; the
harness applies the optimisations itself there so their correctness is still checked. Each row is printed when done;
the table is printed last and written as JSON after each model.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir  # noqa: E402
from torch._inductor.utils import clear_caches  # noqa: E402

from benchmarks.random_pipelines import SPECS, TINY_SIZE, Spec, architectures, saved  # noqa: E402
from pipelines.errors import RequestError  # noqa: E402
from pipelines.preview import LatentPreviewer  # noqa: E402
from pipelines.quantize import MODES, tensor_bytes  # noqa: E402
from pipelines.speed import SpeedOptions, attention_order, optimise  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed"
SEED = 1234


@dataclass(frozen=True)
class Config:
    name: str
    easel: bool
    dtype: str
    speed: SpeedOptions = field(default_factory=SpeedOptions)
    memory_mode: str = "normal"
    request: tuple = ()  # (field, value) pairs the row sets on the request: a fast mode's, a guidance setting's


# Sampling changes measured on top of --fast (``guidance:`` rows): what each costs a picture
GUIDANCE = (("Rescale CFG 0.7", ("rescale_cfg", 0.7)), ("FreeU", ("freeu", True)), ("PAG 3", ("pag_scale", 3.0)),
            ("NGMS 2", ("s_min_uncond", 2.0)), ("Skip Early CFG 0.2", ("skip_early_cond", 0.2)))
# --quick keeps these rows: the baseline, the app's default path, compiled (regions, CUDA graphs), low memory.
QUICK = ("diffusers", "+ fused QKV", "+ compile", "+ CUDA graphs", "--fast, medvram")


def ladder(cuda: bool, compile: bool, backend: str, only: tuple[str, ...] = (),
           warm: tuple[tuple[int, int], ...] = (), changes: dict | None = None) -> list[Config]:
    """The baseline, then Easel with one more optimisation per row (fp32 instead of fp16 on the CPU), then the
    fast modes that are not exact, each on top of ``--fast``. ``warm``: the sizes the compiled rows compile while
    loading (``--compile-sizes``); ``changes`` (``--with``): speed options set on every Easel row, named in it."""
    half = "float16" if cuda else "float32"
    short = {"float16": "fp16", "float32": "fp32"}[half]
    fast = SpeedOptions(channels_last=True, fuse_qkv=True)
    rows = [Config(f"diffusers {short}", False, half), Config(f"easel {short}", True, half),
            Config("+ bf16", True, "bfloat16"),
            Config("+ channels-last", True, "bfloat16", SpeedOptions(channels_last=True)),
            Config("+ fused QKV (--fast)", True, "bfloat16", fast)]
    if cuda:  # not in --fast: its kernel is faster, its launch slower (a loss where launches count)
        rows.append(Config("+ cuDNN attention", True, "bfloat16", replace(fast, cudnn_attention=True)))
    if compile:
        compiled = replace(fast, compile=True, compile_backend=backend, compile_sizes=warm)
        rows.append(Config("+ compile (--compile)", True, "bfloat16", compiled))
        if cuda:
            rows.append(Config("+ CUDA graphs, cuDNN attention (--compile-mode reduce-overhead)", True, "bfloat16",
                               replace(compiled, compile_mode="reduce-overhead", cudnn_attention=True)))
    if cuda:
        rows.append(Config("--fast, medvram", True, "bfloat16", fast, "medvram"))
    rows += [Config("fast mode: step cache 3", True, "bfloat16", fast, request=(("step_cache", 3),)),
             *(Config(f"fast mode: --weights {mode}", True, "bfloat16", replace(fast, weights=mode)) for mode in MODES),
             *(Config(f"guidance: {name}", True, "bfloat16", fast, request=(fields,)) for name, fields in GUIDANCE)]
    if only:
        rows = [row for row in rows if row.name.startswith(only)]
    if changes:
        label = " ".join(f"{key}={value}" for key, value in changes.items())
        rows = [replace(row, name=f"{row.name} [{label}]", speed=replace(row.speed, **changes)) if row.easel else row
                for row in rows]
    return rows


def option(text: str) -> tuple[str, object]:
    """``--with`` KEY=VALUE: a SpeedOptions field and its value (JSON: true, 3, "x"; else the text itself)."""
    key, _, value = text.partition("=")
    if key not in SpeedOptions.__dataclass_fields__:
        raise argparse.ArgumentTypeError(f"{key!r} is none of {', '.join(SpeedOptions.__dataclass_fields__)}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str):
    sync(device)
    started = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - started, out


def median(fn, repeats: int, device: str) -> float:
    return statistics.median(timed(fn, device)[0] for _ in range(repeats))


def matmul_tflops(device: str) -> float:
    """Dense matmul rate measured here: bf16 8192² on CUDA, fp32 512² on the CPU (what the tiny run uses)."""
    cuda = device.startswith("cuda")
    n, dtype, calls = (8192, torch.bfloat16, 20) if cuda else (512, torch.float32, 10)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    seconds = median(lambda: [a @ b for _ in range(calls)], 3, device)
    return 2 * n**3 * calls / seconds / 1e12


def unet_inputs(pipe, spec: Spec, size: int, batch: int) -> dict:
    """Seeded random inputs of one UNet call at ``size`` (on the CPU, in float32): the same for every row."""
    unet, g = pipe.unet, torch.Generator().manual_seed(SEED)
    latent = size // latent_scale(pipe)
    inputs = {"sample": torch.randn(batch, unet.config.in_channels, latent, latent, generator=g),
              "timestep": torch.tensor(500.0),
              "encoder_hidden_states": torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g)}
    if spec.family == "kandinsky22":  # conditioned on the prior's image embedding alone
        inputs.update(encoder_hidden_states=None,
                      added_cond_kwargs={"image_embeds": torch.randn(batch, unet.config.encoder_hid_dim, generator=g)})
    if spec.family == "sdxl":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        inputs["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, pooled, generator=g),
                                       "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * batch).float()}
    return inputs


def latent_scale(pipe) -> int:
    """Pixels per latent: the VAE's, or Kandinsky's MoVQ's."""
    return getattr(pipe, "vae_scale_factor", None) or 2 ** (len(pipe.movq.config.block_out_channels) - 1)


def to(value, device: str, dtype: torch.dtype):
    if isinstance(value, dict):
        return {key: to(item, device, dtype) for key, item in value.items()}
    return value if value is None else value.to(device, dtype)


@torch.no_grad()
def unet_step(pipe, spec: Spec, size: int, device: str) -> torch.Tensor:
    """One CFG-batch UNet call on ``unet_inputs``, in float32 on the CPU: random weights make whole trajectories
    chaotic (any rounding difference ends in unrelated latents), so each optimisation's error is read here."""
    inputs = unet_inputs(pipe, spec, size, batch=2)
    return pipe.unet(**to(inputs, device, pipe.unet.dtype)).sample.float().cpu()


def unet_tflop(pipe, spec: Spec, size: int) -> float:
    """FLOPs of one batch-1 UNet forward, counted (for tiny models, which architectures.json does not list)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        pipe.unet(**unet_inputs(pipe, spec, size, batch=1))
    return counter.get_total_flops() / 1e12


def free(device: str) -> None:
    """Drop the last configuration's model, Dynamo's compiled code and the peak."""
    torch._dynamo.reset()
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def run_config(config: Config, spec: Spec, folder: Path, args, device: str,
               out_dir: Path) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Load, warm up and time one configuration; its row, its final latents and its ``unet_step``."""
    from diffusers import DiffusionPipeline

    from pipelines import kandinsky
    from pipelines.engine import Engine
    from pipelines.generate import decode_latents, run_pipeline, warm_up
    from pipelines.outputs import OutputWriter
    from pipelines.registry import Registry
    from pipelines.request import GenerationRequest
    from pipelines.samplers import make_scheduler

    free(device)
    dtype = getattr(torch, config.dtype)
    if device.startswith("cuda"):
        attention_order(config.easel and config.speed.cudnn_attention)  # process-wide: reset for each row
    if config.easel:
        registry = Registry(folder.parent.parent, device=device, dtype=dtype, memory_mode=config.memory_mode,
                            speed=config.speed, offline=True)
        engine = Engine(registry, OutputWriter(out_dir, enabled=False))
        request = GenerationRequest(prompt=PROMPT, sampler=spec.sampler, steps=args.steps, cfg_scale=spec.cfg,
                                    width=args.size, height=args.size, seed=SEED, model=folder.name,
                                    **dict(config.request))

        def load():
            with registry.lease(folder.name) as model:
                if not device.startswith("cuda"):  # the app does these on CUDA only; checked here anyway
                    optimise(model.pipe, config.speed)
                    warm_up(model.pipe, config.speed.compile_sizes)
                return model.pipeline("txt2img"), LatentPreviewer(model.autoencoder)

        load_s, (pipe, previewer) = timed(load, device)
        unet_bytes = tensor_bytes(pipe.unet)

        def full():
            return engine.generate(request, save=False).images

        def denoise():
            pipe.scheduler = make_scheduler(spec.sampler, "Automatic", pipe.scheduler.config, [SEED])  # as the engine
            return run_pipeline(pipe, request, [SEED], latent_output=True)
    else:
        torch.backends.cuda.matmul.allow_tf32 = False  # as a fresh process has it

        def load():
            loaded = DiffusionPipeline.from_pretrained(folder, dtype=dtype, local_files_only=True).to(device)
            loaded.set_progress_bar_config(disable=True)
            return loaded

        load_s, pipe = timed(load, device)
        unet_bytes, previewer = tensor_bytes(pipe.unet), None

        def call(output_type):
            size = {"width": args.size, "height": args.size, "num_inference_steps": args.steps,
                    "guidance_scale": spec.cfg, "output_type": output_type}
            if spec.family != "kandinsky22":
                return pipe(PROMPT, generator=torch.Generator("cpu").manual_seed(SEED), **size).images
            # The model card's two stages, each with its own generator, as Easel seeds them.
            prior = pipe.prior_pipe(PROMPT, num_inference_steps=kandinsky.PRIOR_STEPS,
                                    guidance_scale=kandinsky.PRIOR_GUIDANCE,
                                    generator=torch.Generator("cpu").manual_seed(SEED))
            return pipe.decoder_pipe(image_embeds=prior.image_embeds, negative_image_embeds=prior.negative_image_embeds,
                                     generator=torch.Generator("cpu").manual_seed(SEED), **size).images

        def full():
            return call("pil")

        def denoise():
            return call("latent")

    first_s, _ = timed(full, device)
    for _ in range(args.warmup - 1):
        full()
    latency = median(full, args.repeats, device)
    latents = denoise()
    denoise_s = median(denoise, args.repeats, device)
    decode_s = median(lambda: decode_latents(pipe, latents), args.repeats, device)
    restart_s = None
    if config.speed.compile:  # as a restarted app: Dynamo's and inductor's memory emptied, the row's cache files kept
        torch._dynamo.reset()
        clear_caches()
        restart_s, _ = timed(full, device)
    if previewer is not None:
        previewer(latents)  # fits its map once, as the engine's first preview does
        preview_share = median(lambda: previewer(latents), args.repeats, device) / (denoise_s / args.steps)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    row = {"model": spec.name, "config": config.name, "dtype": config.dtype, "memory_mode": config.memory_mode,
           "speed": asdict(config.speed), "latency_s": latency, "denoise_s": denoise_s, "decode_s": decode_s,
           "it_per_s": args.steps / denoise_s, "peak_gib": peak, "unet_mib": unet_bytes / 2**20, "load_s": load_s,
           "first_call_s": first_s, "preview_pct": 100 * preview_share if previewer is not None else None,
           "compile_s": first_s - latency if config.speed.compile else None,
           "restart_first_call_s": restart_s}
    step = unet_step(pipe, spec, args.size, device)
    del pipe
    return row, latents.detach().float().cpu(), step


def relative_error(latents: torch.Tensor, reference: torch.Tensor) -> float:
    return float((latents - reference).norm() / reference.norm())


def run_model(spec: Spec, args, device: str, arch: dict, rate: float, out_dir: Path) -> list[dict]:
    folder = saved(spec, args.tiny, device, args.cache_dir, arch)
    rows, reference, reference_step = [], None, None
    for config in ladder(device.startswith("cuda"), args.compile, args.compile_backend,
                          QUICK if args.quick else tuple(args.only or ()),
                          ((args.size, args.size),) if args.warm_up else (), dict(args.changes or ())):
        try:
            with tempfile.TemporaryDirectory() as kernels, temporary_cache_dir(kernels):  # a cold compile per row
                row, latents, step = run_config(config, spec, folder, args, device, out_dir)
        except RequestError as refused:  # a setting the model does not take (PAG without a middle block)
            print(f"{spec.name} / {config.name} refused: {refused}", file=sys.stderr, flush=True)
            free(device)
            continue
        except Exception as error:  # one broken optimisation must not cost the rest of a GPU lease
            rows.append({"model": spec.name, "config": config.name, "error": f"{type(error).__name__}: {error}",
                         "ok": False})
            print(f"{spec.name} / {config.name} failed: {rows[-1]['error']}", file=sys.stderr, flush=True)
            free(device)
            continue
        reference = latents if reference is None else reference
        reference_step = step if reference_step is None else reference_step
        row["rel_err"] = relative_error(latents, reference)
        row["step_err"] = relative_error(step, reference_step)
        row["ok"] = all(bool(torch.isfinite(x).all()) for x in (latents, reference, step))
        rows.append(row)
        print(table([row], header=not rows[:-1]), flush=True)
        free(device)
    if args.tiny:
        from diffusers import DiffusionPipeline

        tflop = unet_tflop(DiffusionPipeline.from_pretrained(folder, local_files_only=True), spec, args.size)
    else:
        tflop = arch["flops_per_unet_forward_batch1_tflop"][spec.flops_key]
    floor = tflop * args.steps * (2 if spec.cfg > 1 else 1) / rate
    baseline = rows[0].get("latency_s") if rows else None
    for row in rows:
        if "latency_s" in row:
            row.update(unet_tflop_per_forward=tflop, floor_s=floor, x_floor=row["latency_s"] / floor,
                       speedup=baseline / row["latency_s"] if baseline else None)
    return rows


COLUMNS = (("s/image", "latency_s", "{:.3f}"), ("it/s", "it_per_s", "{:.1f}"), ("denoise s", "denoise_s", "{:.3f}"),
           ("decode s", "decode_s", "{:.3f}"), ("peak GiB", "peak_gib", "{:.2f}"), ("UNet MiB", "unet_mib", "{:.1f}"),
           ("load s", "load_s", "{:.3f}"), ("first call s", "first_call_s", "{:.3f}"),
           ("restart first call s", "restart_first_call_s", "{:.3f}"),
           ("preview %", "preview_pct", "{:.2f}"), ("x floor", "x_floor", "{:.1f}"), ("speed-up", "speedup", "{:.2f}x"),
           ("step err", "step_err", "{:.2e}"), ("latents err", "rel_err", "{:.2e}"))


def table(rows: list[dict], header: bool = True) -> str:
    """Markdown rows; "-" for what a row lacks (the floor before the model's last row, a failed row's numbers)."""
    lines = ["| model | config | " + " | ".join(title for title, _, _ in COLUMNS) + " | ok |",
             "|" + "---|" * (len(COLUMNS) + 3)] if header else []
    for r in rows:
        cells = [form.format(r[key]) if r.get(key) is not None else "-" for _, key, form in COLUMNS]
        ok = "yes" if r["ok"] else f"FAIL {r.get('error', '(not finite)')}"
        lines.append(f"| {r['model']} | {r['config']} | " + " | ".join(cells) + f" | {ok} |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configs at 64² on the CPU (a harness check)")
    parser.add_argument("--models", nargs="+", choices=list(SPECS), default=list(SPECS))
    parser.add_argument("--steps", type=int, help="sampling steps (default: 25, SDXL 30; tiny: 2)")
    parser.add_argument("--repeats", type=int, help="timed runs per measure (default 5; tiny 1)")
    parser.add_argument("--warmup", type=int, help="untimed full runs first, the first one reported (default 2; "
                        "tiny 1)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="add the + compile row (default: on CUDA only)")
    parser.add_argument("--quick", action="store_true", help="only the baseline, --fast, compiled and medvram rows")
    parser.add_argument("--only", nargs="+", metavar="PREFIX", help="only the rows whose names start so "
                        "(the first one is the error reference)")
    parser.add_argument("--with", dest="changes", nargs="+", type=option, metavar="OPTION=VALUE",
                        help="set these speed options on every Easel row, e.g. compile=true compile_mode="
                             "reduce-overhead to run the fast modes compiled, or cudnn_attention=false")
    parser.add_argument("--warm-up", action="store_true", help="compiled rows compile the picture size while "
                        "loading (the app's --compile-sizes): load s then includes the compile, the first call is warm")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (eager: a quick check)")
    parser.add_argument("--cache-dir", type=Path, help="where the random models are saved (default "
                        "~/.cache/easel/gpu-benchmark; tiny: a temporary folder)")
    parser.add_argument("--json", type=Path, help="results file (default outputs/benchmarks/gpu_speed[-tiny].json)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    args.compile = device == "cuda" if args.compile is None else args.compile
    args.repeats = args.repeats or (1 if args.tiny else 5)
    args.warmup = args.warmup or (1 if args.tiny else 2)
    args.json = args.json or ROOT / "outputs" / "benchmarks" / f"gpu_speed{'-tiny' if args.tiny else ''}.json"
    arch = architectures()
    rate = matmul_tflops(device)
    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        args.cache_dir = args.cache_dir or (Path(tmp) / "models" if args.tiny
                                            else Path.home() / ".cache" / "easel" / "gpu-benchmark")
        for name in args.models:
            spec = SPECS[name]
            args.size = TINY_SIZE if args.tiny else spec.size
            steps = args.steps
            args.steps = steps or (2 if args.tiny else spec.steps)
            rows += run_model(spec, args, device, arch, rate, Path(tmp) / "out")
            args.steps = steps
            result = {"device": where, "torch": torch.__version__, "matmul_tflops": rate, "tiny": args.tiny,
                      "repeats": args.repeats, "rows": rows}
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=1))  # after each model: a cut-off run keeps the rest
    print(f"\nGPU speed on {where}: batch 1, Euler and CFG 7 (Kandinsky: DDPM, CFG 4), median of {args.repeats}; "
          f"dense matmul {rate:.2f} TFLOP/s; {'tiny models at 64², ' if args.tiny else ''}JSON in {args.json}\n")
    print(table(rows))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
