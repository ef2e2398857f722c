"""Easel's engine: requests, model registry, samplers, generation, metadata and outputs. No Gradio here."""
