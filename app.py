"""Easel: a browser UI for text-to-image diffusion models (``python app.py --help``).

Importing this module starts nothing; ``main()`` parses flags into settings, builds the services, the UI and
the A1111-compatible REST API (``api/``), and launches them on one server. Serving beyond this machine
(``--share`` or a non-loopback ``--host``) requires ``--auth`` for the UI and, when the API is on there
(``--api``), ``--api-auth`` for it, unless ``--insecure`` is given; a Hugging Face Space is the exception,
since the Space controls access. The API is on by default only while the server is reachable from this
machine alone.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from pipelines.memory import MODES as MEMORY_MODES
from pipelines.outputs import FORMATS

ROOT = Path(__file__).resolve().parent
VALID_DEVICES = ("auto", "cpu", "cuda", "mps")
VALID_DTYPES = ("auto", "float32", "float16", "bfloat16")
COMPILED_KERNELS = ROOT / ".cache" / "torchinductor"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from pipelines.speed import COMPILE_MODES, WEIGHTS  # torch: here, not at import

    parser = argparse.ArgumentParser(prog="app.py", description="Easel: text-to-image in the browser.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="also serve through a Gradio share link")
    parser.add_argument("--auth", help="UI login: user:password[,user2:password2], or a file with one per line")
    parser.add_argument("--auth-file", help="UI login: a file with one user:password per line")
    parser.add_argument("--api", action=argparse.BooleanOptionalAction, default=None,
                        help="serve the A1111-compatible REST API at /sdapi/v1 (default: on when listening on "
                             "this machine only, off with --share or a network --host)")
    parser.add_argument("--api-auth", help="HTTP Basic for the API: user:password[,user2:password2]")
    parser.add_argument("--insecure", action="store_true",
                        help="allow --share or a network --host without --auth / --api-auth "
                             "(anyone who finds it can use it)")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--outputs-dir", type=Path, default=ROOT / "outputs")
    parser.add_argument("--no-save", action="store_true",
                        help="do not write generated images to --outputs-dir (A1111's samples_save, for this run)")
    parser.add_argument("--samples-format", choices=FORMATS,
                        help="the saved pictures' format for this run (A1111's samples_format; default: the "
                             "settings file's, else png): png, or jpg and webp with the parameters in their EXIF")
    parser.add_argument("--ui-settings-file", type=Path, default=ROOT / "config.json",
                        help="where the Settings tab keeps its options (A1111's config.json)")
    parser.add_argument("--ui-config-file", type=Path, default=ROOT / "ui-config.json",
                        help="the values the generation tabs start with (A1111's ui-config.json)")
    parser.add_argument("--device", choices=VALID_DEVICES, default="auto")
    parser.add_argument("--dtype", choices=VALID_DTYPES, default="auto")
    parser.add_argument("--memory-budget", type=float, metavar="GB",
                        help="memory for resident models before the least recently used is evicted")
    parser.add_argument("--memory-mode", choices=MEMORY_MODES, default="auto",
                        help="normal: models whole on the device; medvram/lowvram: offload to CPU RAM (as A1111's "
                             "flags); auto: normal unless a model does not fit the memory budget")
    parser.add_argument("--medvram", dest="memory_mode", action="store_const", const="medvram",
                        help="same as --memory-mode medvram")
    parser.add_argument("--lowvram", dest="memory_mode", action="store_const", const="lowvram",
                        help="same as --memory-mode lowvram")
    parser.add_argument("--vae", help="a VAE in models/VAE for every model whose easel.json names none (default: the "
                                      "one picked last, kept in the settings file; Automatic: each model's own)")
    parser.add_argument("--controlnet-units", type=int, choices=range(1, 11), default=3, metavar="1-10",
                        help="ControlNet units in each generation tab")
    parser.add_argument("--default-model", default=None,
                        help="model selected at start (default: the one picked last, else easel-shapes)")
    parser.add_argument("--offline", action="store_true", help="never contact the Hugging Face Hub")
    parser.add_argument("--fast", action=argparse.BooleanOptionalAction, default=True,
                        help="on CUDA: bf16 (with --dtype auto), channels-last, fused QKV projections "
                             "(default on; no effect on the CPU)")
    parser.add_argument("--compile", action="store_true",
                        help="on CUDA: torch.compile the UNet's and VAE decoder's repeated blocks (slow first image)")
    parser.add_argument("--compile-mode", choices=COMPILE_MODES, default="default",
                        help="reduce-overhead: --compile with CUDA graphs and cuDNN attention (static sizes; no effect "
                             "on the CPU)")
    parser.add_argument("--compile-sizes", type=_sizes, default=(), metavar="WxH[,WxH...]",
                        help="--compile, and compile these sizes when a model loads (batch 1, CFG on), so that "
                             "pictures of these sizes never wait for a compile (CUDA only)")
    parser.add_argument("--weights", choices=WEIGHTS, default="full",
                        help="store the UNet's weights in int8 or fp8 (less memory, not exact; any device); "
                             "-fast: also multiply in 8 bits (int8: CUDA 8.0+, fp8: 8.9+, or the CPU)")
    return parser.parse_args(argv)


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    from pipelines.errors import RequestError
    from pipelines.request import parse_sizes

    try:
        return parse_sizes(text)
    except RequestError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_auth(value: str | None, flag: str = "--auth") -> list[tuple[str, str]] | None:
    """``user:pass`` or a file of such lines (comma-separated also works) -> a credential list."""
    if not value:
        return None
    path = Path(value)
    text = path.read_text() if path.is_file() else value
    pairs = []
    for item in text.replace(",", "\n").splitlines():
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise SystemExit(f"{flag}: expected user:password, got {item!r}")
        pairs.append((user, password))
    return pairs or None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ui_credentials(args: argparse.Namespace) -> list[tuple[str, str]] | None:
    """The UI's logins from ``--auth`` and ``--auth-file`` together."""
    if args.auth_file and not Path(args.auth_file).is_file():
        raise SystemExit(f"--auth-file: no such file: {args.auth_file}")
    pairs = (parse_auth(args.auth) or []) + (parse_auth(args.auth_file, "--auth-file") or [])
    return pairs or None


def is_public(args: argparse.Namespace) -> bool:
    return args.share or not is_loopback(args.host)


def api_enabled(args: argparse.Namespace) -> bool:
    """``--api``/``--no-api`` when given; otherwise on only while nobody else can reach the server."""
    return args.api if args.api is not None else not is_public(args)


def exposure_problem(args: argparse.Namespace, on_space: bool) -> str | None:
    """Why this launch would expose an unauthenticated UI or API, or None when it is safe."""
    if on_space or args.insecure or not is_public(args):
        return None
    where = ("--share publishes this UI on a public link" if args.share
             else f"--host {args.host} serves this UI to the network")
    if not (args.auth or args.auth_file):
        return f"{where}; add --auth user:password (or --insecure to accept the risk)."
    if api_enabled(args) and not args.api_auth:
        return f"{where} with its REST API (--api); add --api-auth user:password (or --insecure to accept the risk)."
    return None


def settings_from_args(args: argparse.Namespace):
    from pipelines.services import Settings

    return Settings(models_dir=args.models_dir, outputs_dir=args.outputs_dir, device=args.device, dtype=args.dtype,
                    save_outputs=False if args.no_save else None, samples_format=args.samples_format,
                    config_file=args.ui_settings_file, ui_config_file=args.ui_config_file,
                    memory_budget_gb=args.memory_budget, offline=args.offline,
                    default_model=args.default_model, catalog=ROOT / "models" / "catalog.json",
                    memory_mode=args.memory_mode, vae=args.vae, controlnet_units=args.controlnet_units,
                    fast=args.fast, compile=args.compile, compile_mode=args.compile_mode, weights=args.weights,
                    compile_sizes=args.compile_sizes)


def build_app(settings, services=None):
    """The queued Gradio app for ``settings`` (not launched); ``services`` when the API shares them."""
    from pipelines.services import Services
    from ui.layout import build_ui

    demo = build_ui(services or Services.build(settings))
    demo.queue(default_concurrency_limit=1, max_size=64)
    return demo


def keep_compiled_kernels() -> None:
    """torch.compile's kernels go to ``.cache/torchinductor`` unless ``TORCHINDUCTOR_CACHE_DIR`` names another place:
    inductor's own default is under /tmp, which a reboot empties. A model and size then compile from nothing once per
    machine; each later launch reads the kernels back (86 s against 6.5 s for the embedded model on the CPU)."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(COMPILED_KERNELS))


def launch(args: argparse.Namespace, *, block: bool = True):
    """Build the services, the UI and (when enabled) the API for ``args`` and serve them on one server.

    Returns the launched Blocks; with ``block=False`` (tests) it returns as soon as the server is up.
    """
    if args.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"  # before any Hugging Face import
    keep_compiled_kernels()
    from pipelines.services import Services
    from ui.layout import PAGE

    settings = settings_from_args(args)
    services = Services.build(settings)
    demo = build_app(settings, services)
    app_kwargs = {}
    if api_enabled(args):
        import api

        app_kwargs = api.app_kwargs(services, parse_auth(args.api_auth, "--api-auth"))
    # allowed_paths: the Image Browser shows, and the Save buttons' files download from, the outputs folder wherever
    # --outputs-dir puts it (behind the login)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, auth=ui_credentials(args), **PAGE,
                footer_links=["api", "gradio", "settings"], app_kwargs=app_kwargs, prevent_thread_lock=True,
                quiet=not block, allowed_paths=[str(settings.outputs_dir)])
    if args.share and not getattr(demo, "share_url", None):
        print("No share link could be made (offline, or the share service is unreachable); "
              f"serving locally at {demo.local_url}", file=sys.stderr)
    if block:
        demo.block_thread()
    return demo


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    problem = exposure_problem(args, on_space=bool(os.environ.get("SPACE_ID")))
    if problem:
        print(f"Refusing to start: {problem}", file=sys.stderr)
        raise SystemExit(2)
    launch(args)


if __name__ == "__main__":
    main()
