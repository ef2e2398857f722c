"""The Dynamic Prompts panel of every generation tab (the extension's, ``pipelines/dynamic_prompts.py``): its
switches, and the wildcards there are, one of which goes into the prompt when picked."""

from __future__ import annotations

import gradio as gr

from pipelines.prompts import WILDCARD_WRAP
from pipelines.request import MAX_COMBINATORIAL_BATCHES, MAX_GENERATIONS

from .common import FieldSet


def build(services, fields: FieldSet) -> None:
    """The extension's labels and defaults (on: a prompt without templates is left as it is)."""
    p, wildcards = fields.prefix, services.engine.wildcards
    folder = f"{wildcards.folder.parent.name}/{wildcards.folder.name}"
    with gr.Accordion("Dynamic Prompts", open=False, elem_id=f"{p}_dynamic_prompts"):
        fields.add("dynamic_prompts", gr.Checkbox(True, label="Dynamic Prompts enabled", elem_id=f"{p}_dp_enabled",
                                                  info="`{red|blue}` in a prompt: one of them for each "
                                                       "picture; `{2$$a|b|c}`: two; a wildcard (picked below): a "
                                                       f"line of its file in {folder}"))
        with gr.Row():
            fields.add("dp_combinatorial", gr.Checkbox(False, label="Combinatorial generation",
                                                       elem_id=f"{p}_dp_combinatorial",
                                                       info="every combination, in order"))
            fields.add("dp_max_generations", gr.Slider(0, MAX_GENERATIONS, value=0, step=1,
                                                       label="Max generations (0 = all combinations - the batch "
                                                             "count value is ignored)",
                                                       elem_id=f"{p}_dp_max_generations"))
            fields.add("dp_combinatorial_batches", gr.Slider(1, MAX_COMBINATORIAL_BATCHES, value=1, step=1,
                                                             label="Combinatorial batches",
                                                             elem_id=f"{p}_dp_combinatorial_batches"))
        with gr.Row():
            fields.add("dp_fixed_seed", gr.Checkbox(False, label="Fixed seed", elem_id=f"{p}_dp_fixed_seed",
                                                    info="every picture the seed"))
            fields.add("dp_unlink_seed", gr.Checkbox(False, label="Unlink seed from prompt",
                                                     elem_id=f"{p}_dp_unlink_seed",
                                                     info="random prompts that the seed does not decide"))
            picker = gr.Dropdown(wildcards.names(), value=None, label=f"Wildcards ({folder})",
                                 info="the one picked goes into the prompt", elem_id=f"{p}_dp_wildcards")
    prompt = fields.components["prompt"]
    private = {"api_visibility": "private"}
    picker.focus(lambda: gr.Dropdown(choices=wildcards.names()), None, picker, **private)
    # in the page itself: nothing on its way from the server can undo what is typed next
    picker.input(None, [picker, prompt], [prompt, picker], **private,
                 js=f"(name, text) => [name ? [text.trimEnd(), '{WILDCARD_WRAP}' + name + '{WILDCARD_WRAP}']"
                    ".filter(Boolean).join(' ') : text, null]")
