"""The Models tab: which models are resident, where, in which memory mode and how large, with buttons to load
and unload them."""

from __future__ import annotations

import gradio as gr

from pipelines.errors import EaselError

from .common import GPU_QUEUE

COLUMNS = ["Model", "Device", "Memory mode", "Memory (MiB)", "In use"]


def build(services) -> None:
    registry = services.registry

    def table():
        rows = [[r["name"], r["device"], r["mode"], round(r["bytes"] / 2**20, 1), "yes" if r["leases"] else "no"]
                for r in registry.resident()]
        budget = (f"Memory budget: {registry.memory_budget / 2**30:.1f} GiB on {registry.device}; memory mode: "
                  f"{registry.memory_mode}.")
        return rows, budget

    with gr.Row():
        choice = gr.Dropdown(registry.names(), value=None, label="Model", elem_id="models_choice", scale=4,
                             allow_custom_value=True)
        load = gr.Button("Load", elem_id="models_load", scale=0, min_width=100)
        unload = gr.Button("Unload", elem_id="models_unload", scale=0, min_width=100)
        refresh = gr.Button("Refresh", elem_id="models_refresh", scale=0, min_width=100)
    resident = gr.Dataframe(headers=COLUMNS, value=table()[0], interactive=False, elem_id="models_table")
    budget = gr.Markdown(table()[1], elem_id="models_budget")

    def load_model(name: str | None, progress=gr.Progress(track_tqdm=True)):  # a download shows its bars
        try:
            services.engine.load(name or "")
        except EaselError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return table()

    def unload_model(name: str | None):
        if name and not registry.unload(name):
            raise gr.Error(f"{name} is not loaded, or a job is using it.", print_exception=False)
        return table()

    load.click(load_model, choice, [resident, budget], api_name="models_load", concurrency_id=GPU_QUEUE,
               concurrency_limit=1)
    unload.click(unload_model, choice, [resident, budget], api_name="models_unload")
    refresh.click(table, None, [resident, budget], api_name="models_resident")
    refresh.click(lambda: gr.Dropdown(choices=registry.names()), None, choice, api_visibility="private")
