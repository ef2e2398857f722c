"""Easel: a browser UI for text-to-image diffusion models (``python app.py --help``).

Importing this module starts nothing; ``main()`` parses flags into settings, builds the services and the UI,
and launches. Serving beyond this machine (``--share`` or a non-loopback ``--host``) requires ``--auth``
unless ``--insecure`` is given; a Hugging Face Space is the exception, since the Space controls access.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VALID_DEVICES = ("auto", "cpu", "cuda", "mps")
VALID_DTYPES = ("auto", "float32", "float16", "bfloat16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="app.py", description="Easel: text-to-image in the browser.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="also serve through a Gradio share link")
    parser.add_argument("--auth", help="user:password, or a file with one user:password per line")
    parser.add_argument("--insecure", action="store_true",
                        help="allow --share or a network --host without --auth (anyone who finds it can use it)")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--outputs-dir", type=Path, default=ROOT / "outputs")
    parser.add_argument("--no-save", action="store_true", help="do not write generated images to --outputs-dir")
    parser.add_argument("--device", choices=VALID_DEVICES, default="auto")
    parser.add_argument("--dtype", choices=VALID_DTYPES, default="auto")
    parser.add_argument("--memory-budget", type=float, metavar="GB",
                        help="memory for resident models before the least recently used is evicted")
    parser.add_argument("--default-model", default=None, help="model selected at start")
    parser.add_argument("--offline", action="store_true", help="never contact the Hugging Face Hub")
    return parser.parse_args(argv)


def parse_auth(value: str | None) -> list[tuple[str, str]] | None:
    """``user:pass`` or a file of such lines (comma-separated also works) -> Gradio's credential list."""
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
            raise SystemExit(f"--auth: expected user:password, got {item!r}")
        pairs.append((user, password))
    return pairs or None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_problem(args: argparse.Namespace, on_space: bool) -> str | None:
    """Why this launch would expose an unauthenticated UI, or None when it is safe."""
    if on_space or args.auth or args.insecure:
        return None
    if args.share:
        return "--share publishes this UI on a public link; add --auth user:password (or --insecure to accept the risk)."
    if not is_loopback(args.host):
        return (f"--host {args.host} serves this UI to the network; add --auth user:password "
                "(or --insecure to accept the risk).")
    return None


def settings_from_args(args: argparse.Namespace):
    from pipelines.services import DEFAULT_MODEL, Settings

    return Settings(models_dir=args.models_dir, outputs_dir=args.outputs_dir, device=args.device, dtype=args.dtype,
                    save_outputs=not args.no_save, memory_budget_gb=args.memory_budget, offline=args.offline,
                    default_model=args.default_model or DEFAULT_MODEL)


def build_app(settings):
    """The queued Gradio app for ``settings`` (not launched)."""
    from pipelines.services import Services
    from ui.layout import build_ui

    demo = build_ui(Services.build(settings))
    demo.queue(default_concurrency_limit=1, max_size=64)
    return demo


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    on_space = bool(os.environ.get("SPACE_ID"))
    problem = exposure_problem(args, on_space)
    if problem:
        print(f"Refusing to start: {problem}", file=sys.stderr)
        raise SystemExit(2)
    if args.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"  # before any Hugging Face import
    demo = build_app(settings_from_args(args))
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, auth=parse_auth(args.auth),
                footer_links=["api", "gradio", "settings"])
    if args.share and not getattr(demo, "share_url", None):
        print("No share link could be made (offline, or the share service is unreachable); "
              f"serving locally at {demo.local_url}", file=sys.stderr)


if __name__ == "__main__":
    main()
