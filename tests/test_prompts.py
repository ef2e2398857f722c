"""A1111 prompt syntax: attention weights (A1111's own docstring examples) and extra-network tags."""

import pytest

from pipelines.prompts import BREAK, BREAK_WEIGHT, NetworkUse, extract_networks, parse_prompt_attention


@pytest.mark.parametrize("text, expected", [
    # the examples of A1111's modules/prompt_parser.py::parse_prompt_attention docstring
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    (r"\(literal\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", [
        ("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
        (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)]),
])
def test_a1111_docstring_examples(text, expected):
    assert parse_prompt_attention(text) == expected


def test_square_brackets_weights_and_escapes():
    assert parse_prompt_attention("[a] [[b]] (c:0.5) ( d : 2 )") == [
        ("a", 1 / 1.1), (" ", 1.0), ("b", 1 / 1.1 / 1.1), (" ", 1.0), ("c", 0.5), (" ", 1.0), (" d ", 2.0)]
    assert parse_prompt_attention(r"\\ \) \[ x:y") == [("\\ ) [ x:y", 1.0)]
    assert parse_prompt_attention("[unclosed") == [("unclosed", 1 / 1.1)]
    assert parse_prompt_attention("") == [("", 1.0)]
    assert parse_prompt_attention("stray) ]") == [("stray) ]", 1.0)]


def test_break_splits_and_stays_a_break_inside_brackets():
    assert parse_prompt_attention("a cat BREAK a dog") == [("a cat", 1.0), (BREAK, BREAK_WEIGHT), ("a dog", 1.0)]
    assert parse_prompt_attention("(x BREAK y)") == [("x", 1.1), (BREAK, BREAK_WEIGHT), ("y", 1.1)]
    assert parse_prompt_attention("BREAKING news") == [("BREAKING news", 1.0)]


def test_extract_networks():
    text, uses = extract_networks("a cat <lora:ink:0.6>, <lora:style v2:0.3:0.9> <hypernet:net> <lora:x:te=0.2>")
    assert text.replace(" ", "") == "acat,"
    assert uses == [NetworkUse("lora", "ink", 0.6, 0.6), NetworkUse("lora", "style v2", 0.3, 0.9),
                    NetworkUse("hypernet", "net", 1.0, 1.0), NetworkUse("lora", "x", 0.2, 0.2)]
    assert extract_networks("<lora:a>") == ("", [NetworkUse("lora", "a", 1.0, 1.0)])
    assert extract_networks("keep <b:c> as text") == ("keep <b:c> as text", [])
    with pytest.raises(ValueError, match="<lora:a:heavy>"):
        extract_networks("<lora:a:heavy>")


def test_lora_block_weight_tags():
    """The LoRA Block Weight extension's forms: ``lbw=`` after the weights, or a third part that is no number."""
    _, uses = extract_networks("<lora:a:0.5:lbw=OUTD> <lora:b:1:0.8:lbw=1,0,1> <lora:c:0.7:INS> <lora:d:1:0.5>"
                               "<hypernet:h:1:lbw=ALL> <lyco:e:te=0.2:lbw= MIDD >")
    assert uses == [NetworkUse("lora", "a", 0.5, 0.5, "OUTD"), NetworkUse("lora", "b", 1.0, 0.8, "1,0,1"),
                    NetworkUse("lora", "c", 0.7, 0.7, "INS"), NetworkUse("lora", "d", 1.0, 0.5),
                    NetworkUse("hypernet", "h", 1.0, 1.0), NetworkUse("lora", "e", 0.2, 0.2, "MIDD")]


def test_network_use_is_frozen():
    with pytest.raises(AttributeError):
        NetworkUse("lora", "a").name = "b"
