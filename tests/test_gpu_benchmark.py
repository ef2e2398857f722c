"""benchmarks/gpu_speed.py keeps working: its tiny CPU run (a KOALA-700M-shaped model, every row of the ladder,
compile with the quick eager backend, the fast modes) prints the table, writes the JSON and finds the Easel path
equal to diffusers and each optimisation's one-step error at bf16's level; the fast modes differ a little and
quantised weights take about half the UNet's bf16 bytes; Easel's rows measure the live preview; the compiled row its
first call after a restart; the guidance rows run, and the one the model refuses (PAG) is left out. A row that raises
is reported and the ladder goes on; ``--with`` sets speed options on Easel's rows. benchmarks/attention_backends.py
records a forward's attention calls and times them; benchmarks/compile_time.py compiles the UNet each of its ways and
finds the uncompiled UNet's output."""

import json

import pytest

from benchmarks import attention_backends, compile_time, gpu_speed


def test_tiny_run(tmp_path, capsys):
    out = tmp_path / "speed.json"
    code = gpu_speed.main(["--tiny", "--models", "koala_700m", "--compile", "--compile-backend", "eager",
                           "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["config"] for r in rows] == ["diffusers fp32", "easel fp32", "+ bf16", "+ channels-last",
                                           "+ fused QKV (--fast)", "+ compile (--compile)",
                                           "fast mode: step cache 3", "fast mode: --weights int8",
                                           "fast mode: --weights fp8", "fast mode: --weights int8-fast",
                                           "fast mode: --weights fp8-fast", "guidance: Rescale CFG 0.7",
                                           "guidance: FreeU", "guidance: NGMS 2",
                                           "guidance: Skip Early CFG 0.2"]  # KOALA-700M refuses PAG
    assert rows[1]["rel_err"] < 1e-5 and rows[1]["step_err"] == 0  # Easel's path computes what diffusers does
    exact, fast_modes, guidance = rows[:6], rows[6:11], rows[11:]
    assert all(r["ok"] and r["rel_err"] < 0.1 and r["latency_s"] > 0 and r["floor_s"] > 0 for r in exact)
    assert all(0 < r["step_err"] < 0.05 for r in exact[2:])  # bf16's error in one UNet call
    assert all(r["ok"] and 0 < r["rel_err"] < 1 for r in fast_modes)  # measured, not exact
    assert all(r["ok"] and r["rel_err"] > 0 and r["latency_s"] > 0 for r in guidance)  # another picture, timed
    assert rows[5]["compile_s"] is not None and rows[5]["restart_first_call_s"] > 0  # compiled again, as restarted
    assert all(r["restart_first_call_s"] is None for i, r in enumerate(rows) if i != 5)
    assert all(r["unet_mib"] < 0.6 * rows[4]["unet_mib"] for r in fast_modes[1:])  # bf16 -> 8 bits (+ scales)
    assert all(0 < r["preview_pct"] < 100 for r in rows[1:]) and rows[0]["preview_pct"] is None  # Easel's rows
    printed = capsys.readouterr()
    assert printed.out.rstrip().splitlines()[-1].startswith("| koala_700m | guidance: Skip Early CFG 0.2")
    assert "koala_700m / guidance: PAG 3 refused: PAG needs self-attention" in printed.err


def test_a_row_that_raises_is_reported_and_fails_the_run(tmp_path, monkeypatch, capsys):
    real = gpu_speed.run_config

    def run_config(config, *args):
        if config.name == "+ bf16":
            raise RuntimeError("no such kernel")
        return real(config, *args)

    monkeypatch.setattr(gpu_speed, "run_config", run_config)
    out = tmp_path / "speed.json"
    code = gpu_speed.main(["--tiny", "--models", "sd15", "--only", "diffusers", "+ bf16", "+ channels-last",
                           "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert code == 1
    assert [(r["config"], r["ok"]) for r in rows] == [("diffusers fp32", True), ("+ bf16", False),
                                                      ("+ channels-last", True)]
    assert rows[1]["error"] == "RuntimeError: no such kernel"
    assert "| sd15 | + bf16 | - |" in capsys.readouterr().out


def test_warm_up_compiles_while_loading(tmp_path):
    out = tmp_path / "speed.json"
    assert gpu_speed.main(["--tiny", "--models", "sd15", "--only", "+ compile", "--compile", "--compile-backend",
                           "eager", "--warm-up", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["config"], r["speed"]["compile_sizes"]) for r in rows] == [("+ compile (--compile)", [[64, 64]])]


def test_kandinsky_decoder_takes_the_fast_path_and_easel_equals_its_model_card(tmp_path):
    out = tmp_path / "speed.json"
    assert gpu_speed.main(["--tiny", "--models", "kandinsky22", "--only", "diffusers", "easel", "+ fused QKV",
                           "fast mode: --weights int8-fast", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["config"] for r in rows] == ["diffusers fp32", "easel fp32", "+ fused QKV (--fast)",
                                           "fast mode: --weights int8-fast"]
    assert rows[1]["rel_err"] == 0 and rows[1]["step_err"] == 0  # prior, then decoder, seeded as Easel seeds them
    assert all(r["ok"] and 0 < r["step_err"] < 0.05 for r in rows[2:])  # bf16's error, int8's near it
    assert rows[3]["unet_mib"] < 0.6 * rows[2]["unet_mib"]


def test_with_sets_speed_options_on_the_easel_rows_and_names_them(tmp_path):
    out = tmp_path / "speed.json"
    assert gpu_speed.main(["--tiny", "--models", "sd15", "--only", "diffusers", "fast mode: --weights int8-fast",
                           "--with", "compile=true", "compile_backend=eager", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    label = "[compile=True compile_backend=eager]"
    assert [r["config"] for r in rows] == ["diffusers fp32", f"fast mode: --weights int8-fast {label}"]
    assert rows[1]["speed"]["compile"] and rows[1]["speed"]["weights"] == "int8-fast"  # the fast mode, compiled
    assert rows[1]["ok"] and rows[1]["restart_first_call_s"] > 0 and rows[0]["speed"]["compile"] is False


def test_with_refuses_an_unknown_option(capsys):
    with pytest.raises(SystemExit):
        gpu_speed.main(["--tiny", "--with", "turbo=true"])
    assert "'turbo' is none of channels_last" in capsys.readouterr().err


def test_attention_backends_records_each_forwards_attention_calls(capsys):
    assert attention_backends.main(["--tiny", "--models", "sd15", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split(" | ") for line in lines if line.startswith("| sd15 64²")]
    # tiny SD 1.5 at 64²: self- and cross-attention at three levels of 5 calls (a level's two transformer blocks
    # down, three up), the mid block's one pair; head width 8 then 16, keys of 77 tokens for the prompt
    assert [(query, key, calls) for _, query, key, calls, *_ in rows[:2]] == [
        ("(2, 2, 64, 8)", "(2, 2, 64, 8)", "5"), ("(2, 2, 64, 8)", "(2, 2, 77, 8)", "5")]
    assert rows[-1][1:4] == ["one forward", "all", "32"]
    default, math = (float(cell.strip(" *|")) for cell in rows[-1][4:6])
    assert default > 0 and math > 0


def test_compile_time_tiny_run(capsys):
    assert compile_time.main(["--tiny", "--backend", "eager", "--models", "sdxl", "--repeats", "1"]) == 0
    last = capsys.readouterr().out.rstrip().splitlines()[-3:]  # the table's rows
    assert [line.split(" | ")[1] for line in last] == ["regions", "whole", "whole, nested"]
    assert all(float(line.split(" | ")[-1].rstrip(" |")) < 1e-5 for line in last)
