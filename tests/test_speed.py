"""The CUDA fast path (pipelines/speed.py) on the CPU: the app leaves CPU models untouched; applied by hand, fused
QKV gives the same latents without a second copy of the weights, and a LoRA still applies through it. The weights
modes (int8, fp8, and their -fast forms that multiply in 8 bits) save memory, stay close and take LoRAs; a device
without the 8-bit kernel is refused with a message; a compiled UNet switches LoRAs without recompiling; compiled
whole, its transformer blocks are traced once per shape."""

from collections import Counter
from dataclasses import replace

import pytest
import torch

import app
from pipelines import quantize, speed
from pipelines.errors import ModelError
from pipelines.networks import lora
from pipelines.networks.block_weights import IDS, Strength
from pipelines.registry import Registry
from pipelines.services import resolve_dtype
from training.tiny_random import build_tiny_sd


def latents(pipe, seed: int = 1) -> torch.Tensor:
    return pipe("a red circle", num_inference_steps=2, width=64, height=64, output_type="latent",
                generator=torch.Generator().manual_seed(seed)).images


def test_flags_and_cpu_models_untouched(models_dir):
    settings = app.settings_from_args(app.parse_args([]))
    assert settings.fast and not settings.compile
    settings = app.settings_from_args(app.parse_args(["--no-fast", "--compile"]))
    assert not settings.fast and settings.compile
    assert resolve_dtype("auto", "cpu", fast=True) == torch.float32
    registry = Registry(models_dir, device="cpu", speed=speed.SpeedOptions.from_flags(True, compile=True))
    with registry.lease("tiny-sd") as model:
        unet = model.pipe.unet
        assert not any(isinstance(p, speed.LoraAwareFusedProcessor) for p in unet.attn_processors.values())
        assert not hasattr(unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1, "to_qkv")
        assert unet.conv_in.weight.is_contiguous()  # not channels-last
    assert speed.apply(model.pipe, registry.speed, "cpu") == []


def test_fused_qkv_same_latents_without_a_copy():
    pipe = build_tiny_sd()
    pipe.set_progress_bar_config(disable=True)
    before, count = latents(pipe), sum(p.numel() for p in pipe.unet.parameters())
    assert speed.optimise(pipe, speed.SpeedOptions(channels_last=True, fuse_qkv=True)) == ["channels-last",
                                                                                            "fused QKV"]
    torch.testing.assert_close(latents(pipe), before, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in pipe.unet.parameters()) == count
    block = pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0]

    def storage(tensor):
        return tensor.untyped_storage().data_ptr()

    assert storage(block.attn1.to_k.weight) == storage(block.attn1.to_qkv.weight)
    assert storage(block.attn2.to_v.weight) == storage(block.attn2.to_kv.weight)


def counting_backend(compiles: list):
    """A torch.compile backend that records each graph it is given in ``compiles`` and runs it as it is."""
    def backend(graph, inputs):
        compiles.append(graph)
        return graph.forward

    return backend


def lora_weights(pipe, seed: int = 3) -> dict:
    """A PEFT-format LoRA on the UNet's query, key, value and output projections."""
    g = torch.Generator().manual_seed(seed)
    weights = {}
    for name, module in pipe.unet.named_modules():
        if name.endswith(("to_q", "to_k", "to_v", "to_out.0")):
            weights[f"unet.{name}.lora_A.weight"] = torch.randn(2, module.in_features, generator=g) * 0.5
            weights[f"unet.{name}.lora_B.weight"] = torch.randn(module.out_features, 2, generator=g) * 0.5
    return weights


def test_lora_applies_through_fused_projections():
    plain, fused = build_tiny_sd(), build_tiny_sd()
    speed.optimise(fused, speed.SpeedOptions(fuse_qkv=True))
    weights = lora_weights(plain)
    results = {}
    for name, pipe in (("plain", plain), ("fused", fused)):
        pipe.set_progress_bar_config(disable=True)
        pipe.load_lora_weights(dict(weights), adapter_name="style")
        with lora.active(pipe, {"style": Strength(1.0, 1.0)}):
            results[name] = latents(pipe)
        results[f"{name} off"] = latents(pipe)
    torch.testing.assert_close(results["fused"], results["plain"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(results["fused off"], results["plain off"], rtol=1e-4, atol=1e-5)
    assert (results["fused"] - results["fused off"]).abs().max() > 1e-2  # the LoRA did something


def test_flags_for_cuda_graphs_and_weights_leave_the_cpu_path_as_it_was():
    settings = app.settings_from_args(app.parse_args(["--compile-mode", "reduce-overhead", "--weights", "int8"]))
    assert (settings.compile_mode, settings.weights) == ("reduce-overhead", "int8")
    options = speed.SpeedOptions.from_flags(True, compile_mode="reduce-overhead")
    assert options.compile and options.compile_mode == "reduce-overhead" and options.cudnn_attention
    assert not any(speed.SpeedOptions.from_flags(fast, compile=True, compile_mode=mode).cudnn_attention
                   for fast, mode in ((True, "default"), (False, "reduce-overhead")))  # a loss outside CUDA graphs
    pipe = build_tiny_sd()
    assert speed.apply(pipe, options, "cpu") == []  # compile, CUDA graphs: CUDA only
    assert speed.apply(pipe, speed.SpeedOptions.from_flags(True, weights="int8"), "cpu") == ["int8 weights"]
    assert speed.infotext_params(pipe) == {"Weights": "int8 weight-only"}
    assert pipe.unet.conv_in.weight.is_contiguous() and not hasattr(pipe.unet.down_blocks[1].attentions[0]
                                                                    .transformer_blocks[0].attn1, "to_qkv")


def test_attention_order_puts_cudnn_first_and_gives_torch_its_own_back():
    own = torch._C._get_sdp_priority_order()
    try:
        speed.attention_order(True)
        order = torch._C._get_sdp_priority_order()
        assert order[0] == int(torch.nn.attention.SDPBackend.CUDNN_ATTENTION) and sorted(order) == sorted(own)
    finally:
        speed.attention_order(False)
    assert torch._C._get_sdp_priority_order() == own


def test_quantised_weights_save_memory_stay_close_and_take_a_lora():
    reference = build_tiny_sd()
    reference.set_progress_bar_config(disable=True)
    expected, full_bytes = latents(reference), quantize.tensor_bytes(reference.unet)
    weights = lora_weights(reference)
    for mode, tolerance in (("int8", 0.02), ("fp8", 0.1), ("int8-fast", 0.02), ("fp8-fast", 0.1)):
        pipe = build_tiny_sd()
        pipe.set_progress_bar_config(disable=True)
        assert speed.optimise(pipe, speed.SpeedOptions(fuse_qkv=True, weights=mode)) == [f"{mode} weights"]
        assert quantize.tensor_bytes(pipe.unet) < 0.35 * full_bytes  # fp32 -> 8 bits, plus scales
        assert pipe.unet.dtype == torch.float32  # computes as before
        eight_bit = [m for m in pipe.unet.modules() if isinstance(m, quantize.Linear8bit)]
        assert bool(eight_bit) == mode.endswith("-fast"), mode
        out = latents(pipe)
        error = float((out - expected).norm() / expected.norm())
        assert torch.isfinite(out).all() and 0 < error < tolerance, (mode, error)
        pipe.load_lora_weights(dict(weights), adapter_name="style")
        wrapped = any(getattr(m, "base_layer", None) in eight_bit for m in pipe.unet.modules())
        assert wrapped == mode.endswith("-fast")  # PEFT wraps the 8-bit layers too
        with lora.active(pipe, {"style": Strength(1.0, 1.0)}):
            assert (latents(pipe) - out).abs().max() > 1e-2
        torch.testing.assert_close(latents(pipe), out, rtol=0, atol=0)


@pytest.mark.parametrize("storage", ["int8", "fp8"])
def test_eight_bit_matmul_follows_the_dequantised_one(storage):
    """The -fast forward (input scaled per row, one 8-bit matmul) against the same codes dequantised."""
    g = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(64, 32).to(torch.bfloat16)
    x = torch.randn(2, 40, 64, generator=g).to(torch.bfloat16)
    quantize.quantize(torch.nn.Sequential(layer), f"{storage}-fast")
    with torch.no_grad():
        fast = layer(x).float()
        dequantised = torch.nn.functional.linear(x, layer.weight, layer.bias).float()
        few_rows = layer(x[:1, :8])  # 8 rows: below the kernels' minimum, the dequantising path exactly
        torch.testing.assert_close(few_rows, torch.nn.functional.linear(x[:1, :8], layer.weight, layer.bias))
    error = float((fast - dequantised).norm() / dequantised.norm())
    assert fast.shape == (2, 40, 32) and 0 < error < {"int8": 0.02, "fp8": 0.08}[storage], error


@pytest.mark.parametrize("mode", ["int8-fast", "fp8-fast"])
def test_eight_bit_matmuls_compile_whole(mode):
    """--compile traces the 8-bit layers into its graphs (fullgraph: a graph break would raise) and computes what
    they compute uncompiled."""
    eager, compiled = build_tiny_sd(), build_tiny_sd()
    for pipe in (eager, compiled):
        pipe.set_progress_bar_config(disable=True)
    speed.optimise(eager, speed.SpeedOptions(weights=mode))
    speed.optimise(compiled, speed.SpeedOptions(weights=mode, compile=True, compile_backend="aot_eager"))
    torch._dynamo.reset()
    try:
        torch.testing.assert_close(latents(compiled), latents(eager), rtol=1e-4, atol=1e-5)
    finally:
        torch._dynamo.reset()


def test_a_device_without_the_eight_bit_kernel_is_refused_when_the_model_loads(models_dir, monkeypatch):
    def missing(*args, **kwargs):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(torch, "_scaled_mm", missing)
    registry = Registry(models_dir, device="cpu", speed=speed.SpeedOptions(weights="fp8-fast"))
    with pytest.raises(ModelError, match=r"--weights fp8-fast needs fp8 matmuls.*--weights fp8 stores"):
        with registry.lease("tiny-sd"):
            pass
    assert registry.resident() == []  # nothing half-loaded stays behind


@pytest.mark.parametrize("mode, label, model", [("fp8", "fp8 e4m3 weight-only", "tiny-sd"),
                                               ("int8-fast", "int8 weights and matmuls", "tiny-sd"),
                                               ("int8", "int8 weight-only", "tiny-kandinsky")])
def test_engine_labels_quantised_weights(request, tmp_path, mode, label, model):
    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter
    from pipelines.request import GenerationRequest

    folder = request.getfixturevalue("kandinsky_dir" if model == "tiny-kandinsky" else "models_dir")
    registry = Registry(folder, device="cpu", speed=speed.SpeedOptions(weights=mode))
    engine = Engine(registry, OutputWriter(tmp_path, enabled=False))
    result = engine.generate(GenerationRequest(prompt="x", steps=1, width=64, height=64, seed=1, model=model,
                                               sampler="DDPM"))
    assert f"Weights: {label}" in result.infotexts[0]


def test_kandinsky_decoder_takes_the_fast_path(kandinsky_dir):
    """Kandinsky 2.2's decoder gets the fast path: its UNet and MoVQ channels-last, and compiled block by block (the
    UNet's attention layers and resnets, the MoVQ decoder's), with the same latents. Its attention layers project
    their added keys and values apart, so they keep their processor: fused QKV leaves them."""
    from diffusers import DiffusionPipeline

    from pipelines.generate import run_pipeline
    from pipelines.request import GenerationRequest

    pipe = DiffusionPipeline.from_pretrained(kandinsky_dir / "Stable-diffusion" / "tiny-kandinsky",
                                             local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    request = GenerationRequest(prompt="a red circle", steps=2, width=64, height=64, sampler="DDPM", cfg_scale=4.0)
    processors = {name: type(p) for name, p in pipe.unet.attn_processors.items()}
    before = run_pipeline(pipe, request, [3], latent_output=True)
    compiles = []
    torch._dynamo.reset()
    try:
        done = speed.optimise(pipe, speed.SpeedOptions(channels_last=True, fuse_qkv=True, compile=True,
                                                       compile_backend=counting_backend(compiles)))
        assert done == ["channels-last", "compile"]
        assert {name: type(p) for name, p in pipe.unet.attn_processors.items()} == processors
        assert all(model.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
                   for model in (pipe.unet, pipe.movq.decoder))
        compiled = {type(block).__name__ for block in (*speed.regions(pipe.unet), *speed.regions(pipe.movq.decoder))}
        assert compiled == {"Attention", "ResnetBlock2D", "ResnetBlockCondNorm2D"}
        torch.testing.assert_close(run_pipeline(pipe, request, [3], latent_output=True), before)
        assert compiles
    finally:
        torch._dynamo.reset()


def test_compile_sizes_flag(capsys):
    settings = app.settings_from_args(app.parse_args(["--compile-sizes", "1024x1024, 832x1216"]))
    assert settings.compile_sizes == ((1024, 1024), (832, 1216))
    options = speed.SpeedOptions.from_flags(True, compile_sizes=settings.compile_sizes)
    assert options.compile and options.compile_sizes == settings.compile_sizes  # sizes imply --compile
    with pytest.raises(SystemExit):
        app.parse_args(["--compile-sizes", "1024x1020"])
    assert "Height must be a multiple of 8, got 1020." in capsys.readouterr().err


@pytest.fixture
def compiling_registry(monkeypatch):
    """``compiling_registry(models_dir, compiles, sizes)``: a CPU registry that compiles as it would on CUDA, with
    ``--compile-sizes`` and a backend recording its graphs in ``compiles``."""
    from pipelines import registry as registry_module

    def make(models_dir, compiles, sizes=((64, 64), (64, 96))):
        options = speed.SpeedOptions.from_flags(False, compile_sizes=sizes)
        return Registry(models_dir, device="cpu", speed=replace(options, compile_backend=counting_backend(compiles)))

    monkeypatch.setattr(registry_module, "apply_speed", lambda pipe, options, *_: speed.optimise(pipe, options))
    torch._dynamo.reset()
    yield make
    torch._dynamo.reset()


@pytest.mark.parametrize("name, folder, warmed, other", [("tiny-sd", "models_dir", (96, 96), (96, 64)),
                                                         ("tiny-kandinsky", "kandinsky_dir", (64, 128), (128, 64))])
def test_compile_sizes_are_compiled_while_the_model_loads(request, compiling_registry, name, folder, warmed, other):
    """The registry makes a compiled model compile the --compile-sizes as it loads: pictures of those sizes, with
    any prompt and seed, compile nothing more; another size compiles on first use. A size the model does not make
    (Kandinsky's are multiples of 64) is passed over."""
    compiles = []

    def picture(pipe, size, prompt="a red circle", seed=1):
        pipe(prompt, num_inference_steps=2, width=size[0], height=size[1], output_type="latent",
             generator=torch.Generator().manual_seed(seed))

    registry = compiling_registry(request.getfixturevalue(folder), compiles, ((64, 96), warmed))
    with registry.lease(name) as model:
        at_load = len(compiles)
        assert at_load > 0
        picture(model.pipe, warmed, "a blue square", 2)
        picture(model.pipe, warmed)
        assert len(compiles) == at_load
        picture(model.pipe, other)
        assert len(compiles) > at_load


def test_compile_sizes_leave_an_upscaler_to_its_pictures(tmp_path, compiling_registry):
    """A model upscaler is compiled but not warmed up with the --compile-sizes: its sizes follow the pictures it is
    given (a picture from a size is not what it makes)."""
    from pipelines.upscalers import MODEL_UPSCALERS, UPSCALER_DIR
    from training.tiny_random import build_tiny_upscaler

    build_tiny_upscaler("x4").save_pretrained(tmp_path / UPSCALER_DIR / MODEL_UPSCALERS["SD x4"].folder)
    compiles = []
    registry = compiling_registry(tmp_path, compiles)
    with registry.lease(registry.resolve_upscaler("SD x4")) as model:
        assert speed.is_compiled(model.pipe.unet) and compiles == []


@pytest.mark.parametrize("nested", [True, False])
def test_whole_unet_compile_traces_each_block_shape_once(nested):
    """--compile-mode reduce-overhead compiles the whole UNet as one graph (replayed as a CUDA graph on CUDA only).
    Its transformer blocks are nested compile regions: one traced body per block shape, called wherever a block of
    that shape runs, each with its own weights (the latents are eager's). Without nesting every block is inline."""
    from training.tiny_random import build_tiny_sdxl

    eager, pipe = build_tiny_sdxl(), build_tiny_sdxl()
    for each in (eager, pipe):
        each.set_progress_bar_config(disable=True)
    expected = latents(eager)
    compiles = []
    torch._dynamo.reset()
    try:
        done = speed.optimise(pipe, speed.SpeedOptions(compile=True, compile_mode="reduce-overhead",
                                                       nested_regions=nested,
                                                       compile_backend=counting_backend(compiles)))
        assert done == ["compile"]  # no CUDA graphs off CUDA
        torch.testing.assert_close(latents(pipe), expected, rtol=1e-5, atol=1e-6)
        unet_graph = max(compiles, key=lambda graph: len(graph.graph.nodes)).graph
        calls = [node for node in unet_graph.nodes
                 if node.op == "call_function" and node.target is torch.ops.higher_order.invoke_subgraph]
        bodies = Counter(node.args[0].target for node in calls)
        if nested:
            assert len(bodies) < len(calls) and min(bodies.values()) >= 2  # a body used once is inlined
        else:
            assert not calls
    finally:
        torch._dynamo.reset()


MID = tuple(float(block == "M00") for block in IDS)  # LoRA Block Weight: the middle block's layers alone


@pytest.mark.parametrize("mode", speed.COMPILE_MODES)
def test_compiled_unet_switches_lora_prompt_and_seed_without_recompiling(mode):
    """With --compile (regions) or the whole UNet compiled (--compile-mode reduce-overhead, blocks nested), a
    LoRA file compiles once when first loaded; switching LoRAs, weights (block weights too), prompt or seed
    afterwards compiles nothing, LoRAs give the uncompiled model's latents, and no LoRA still gives the base model's
    latents exactly."""
    compiles = []
    counting = counting_backend(compiles)

    base = build_tiny_sd()
    base.set_progress_bar_config(disable=True)
    expected = latents(base)
    pipe = build_tiny_sd()
    pipe.set_progress_bar_config(disable=True)
    speed.optimise(pipe, speed.SpeedOptions(compile=True, compile_mode=mode, compile_backend=counting))
    torch._dynamo.reset()
    try:
        torch.testing.assert_close(latents(pipe), expected, rtol=0, atol=0)
        for name, seed in (("a", 3), ("b", 4)):  # loading a file: its layers' graphs compile once
            pipe.load_lora_weights(lora_weights(pipe, seed), adapter_name=name)
            with lora.active(pipe, {name: Strength(1.0, 1.0)}):
                latents(pipe)
        compiled = len(compiles)
        results = {}
        a_and_b = {"a": Strength(1.0, 1.0), "b": Strength(0.7, 0.7)}
        for label, weights, seed in (("a", {"a": Strength(1.0, 1.0)}, 1), ("b", {"b": Strength(1.0, 1.0)}, 1),
                                     ("a half", {"a": Strength(0.5, 0.5)}, 1), ("a+b", a_and_b, 1),
                                     ("a mid", {"a": Strength(1.0, 1.0, MID)}, 1),
                                     ("none", {}, 1), ("none, seed 2", {}, 2)):
            with lora.active(pipe, weights):
                results[label] = latents(pipe, seed)
        assert len(compiles) == compiled
        torch.testing.assert_close(results["none"], expected, rtol=0, atol=0)
        assert len({round(float(r.abs().sum()), 4) for r in results.values()}) == len(results)  # all differ
        for name, seed in (("a", 3), ("b", 4)):  # each block with its own LoRA weights, as uncompiled
            base.load_lora_weights(lora_weights(base, seed), adapter_name=name)
        with lora.active(base, a_and_b):
            torch.testing.assert_close(results["a+b"], latents(base))
        with lora.active(base, {"a": Strength(1.0, 1.0, MID)}):  # LoRA Block Weight: its scales held too
            torch.testing.assert_close(results["a mid"], latents(base))
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("mode", speed.COMPILE_MODES)
def test_tiling_on_a_compiled_unet_compiles_again_and_matches_eager(mode):
    """Circular padding is part of a compiled block's graph: tiling must make new graphs (not reuse the
    zero-padded ones), and turning it off must give the first graphs' latents again."""
    from pipelines.tiling import tiled

    compiles = []
    eager = build_tiny_sd()
    eager.set_progress_bar_config(disable=True)
    with tiled(eager, "both"):
        expected = latents(eager)
    pipe = build_tiny_sd()
    pipe.set_progress_bar_config(disable=True)
    speed.optimise(pipe, speed.SpeedOptions(compile=True, compile_mode=mode,
                                            compile_backend=counting_backend(compiles)))
    torch._dynamo.reset()
    try:
        plain = latents(pipe)
        before = len(compiles)
        with tiled(pipe, "both"):
            torch.testing.assert_close(latents(pipe), expected, rtol=0, atol=0)
        assert len(compiles) > before and not torch.equal(plain, expected)
        torch.testing.assert_close(latents(pipe), plain, rtol=0, atol=0)
    finally:
        torch._dynamo.reset()
