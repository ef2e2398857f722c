"""benchmarks/gpu_speed.py keeps working: its tiny CPU run (a KOALA-700M-shaped model, every row of the ladder,
compile with the quick eager backend, the fast modes) prints the table, writes the JSON and finds the Easel path
equal to diffusers; the fast modes differ a little and quantised weights take about half the UNet's bf16 bytes."""

import json

from benchmarks import gpu_speed


def test_tiny_run(tmp_path, capsys):
    out = tmp_path / "speed.json"
    code = gpu_speed.main(["--tiny", "--models", "koala_700m", "--compile", "--compile-backend", "eager",
                           "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["config"] for r in rows] == ["diffusers fp32", "easel fp32", "+ bf16", "+ channels-last",
                                           "+ fused QKV (--fast)", "+ compile (--compile)",
                                           "fast mode: step cache 3", "fast mode: --weights int8",
                                           "fast mode: --weights fp8"]
    assert rows[1]["rel_err"] < 1e-5  # Easel's path computes exactly what plain diffusers does
    exact, fast_modes = rows[:6], rows[6:]
    assert all(r["ok"] and r["rel_err"] < 0.1 and r["latency_s"] > 0 and r["floor_s"] > 0 for r in exact)
    assert all(r["ok"] and 0 < r["rel_err"] < 1 for r in fast_modes)  # measured, not exact
    assert rows[5]["compile_s"] is not None
    assert all(r["unet_mib"] < 0.6 * rows[4]["unet_mib"] for r in fast_modes[1:])  # bf16 -> 8 bits (+ scales)
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith("| koala_700m | fast mode: --weights fp8")
