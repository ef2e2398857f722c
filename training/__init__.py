"""Training and scoring of the embedded default model (easel-shapes) on synthetic shape pictures."""
