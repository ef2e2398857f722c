"""Easel's Gradio UI: one module per tab, shared widgets in ``common``. No torch or diffusers here."""
