"""No command-line option is silently ignored.

Two checks over the whole typer app:

- **read**: every parameter of every command's callback is read in its body, or passed on to a
  function of the same module that reads it (followed through the AST);
- **modes**: for each command with modes (export: cross-encoder vs listwise LM; distill: the
  student kinds; label: its teacher sources; rerank: --bundle vs --teacher), a table says which
  options a mode cannot honour, and passing one must fail (non-zero exit) with a message naming it.
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rrdistill.cli import app

runner = CliRunner()


def _commands() -> list[tuple[str, Any]]:
    return [(c.name or c.callback.__name__.replace("_", "-"), c.callback) for c in app.registered_commands]


@functools.cache
def _module_functions(callback: Any) -> dict[str, ast.FunctionDef]:
    tree = ast.parse(inspect.getsource(inspect.getmodule(callback)))
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def reads(
    function: ast.FunctionDef, name: str, functions: dict[str, ast.FunctionDef], depth: int = 0
) -> bool:
    """Whether `function` reads parameter `name`: loads it anywhere but as a bare argument to a
    same-module function, or passes it to one that reads the matching parameter."""
    handed: list[tuple[str, int | None, str | None]] = []
    bare: set[int] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions:
            for i, arg in enumerate(node.args):
                if isinstance(arg, ast.Name) and arg.id == name:
                    handed.append((node.func.id, i, None))
                    bare.add(id(arg))
            for keyword in node.keywords:
                if isinstance(keyword.value, ast.Name) and keyword.value.id == name:
                    handed.append((node.func.id, None, keyword.arg))
                    bare.add(id(keyword.value))
    if any(
        isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load) and id(n) not in bare
        for n in ast.walk(function)
    ):
        return True
    for callee, position, keyword in handed:
        target = functions[callee]
        parameters = [a.arg for a in (*target.args.posonlyargs, *target.args.args, *target.args.kwonlyargs)]
        inner = parameters[position] if position is not None and position < len(parameters) else keyword
        if inner and depth < 5 and reads(target, inner, functions, depth + 1):
            return True
    return False


READ_CASES = [
    (command, parameter)
    for command, callback in _commands()
    for parameter in inspect.signature(callback).parameters
]


def test_the_walk_sees_every_command() -> None:
    names = {name for name, _ in _commands()}
    assert {"export", "distill", "label", "rerank", "serve", "bench", "pipeline", "retrieve"} <= names
    assert len(READ_CASES) > 100


@pytest.mark.parametrize(("command", "parameter"), READ_CASES, ids=[f"{c}:{p}" for c, p in READ_CASES])
def test_every_parameter_is_read(command: str, parameter: str) -> None:
    callback = dict(_commands())[command]
    functions = _module_functions(callback)
    assert reads(functions[callback.__name__], parameter, functions), (
        f"`rrdistill {command}` never reads its parameter {parameter!r}"
    )


def test_the_reader_follows_arguments_into_helpers() -> None:
    source = """
def command(a, b, c):
    helper(a, b, flag=c)
def helper(x, y, flag=None):
    return x + (flag or 0)
"""
    functions = {n.name: n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
    assert reads(functions["command"], "a", functions)
    assert reads(functions["command"], "c", functions)
    assert not reads(functions["command"], "b", functions)  # handed on, then dropped


# ------------------------------------------------------------------------------------------------
# Modes: which options each mode cannot honour
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-options")
    causal, encoder = root / "causal-lm", root / "cross-encoder"
    for folder, architecture in ((causal, "Qwen2ForCausalLM"), (encoder, "BertForSequenceClassification")):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"architectures": [architecture]}))
    empty = root / "empty.jsonl"
    empty.write_text("")
    config = root / "student.yaml"
    config.write_text("output_dir: x\n")
    return {"causal": causal, "encoder": encoder, "empty": empty, "config": config, "root": root}


def _base(mode: str, f: dict[str, Path]) -> list[str]:
    out = str(f["root"] / "out")
    return {
        "export listwise-lm": ["export", str(f["causal"]), out],
        "export cross-encoder": ["export", str(f["encoder"]), out],
        "export fp32": ["export", str(f["encoder"]), out, "--precision", "fp32"],
        "export listwise-lm fp32": ["export", str(f["causal"]), out, "--precision", "fp32"],
        "distill listwise-lm": [
            "distill",
            "--student",
            "listwise-lm",
            "--labels",
            str(f["empty"]),
            "-o",
            out,
        ],
        "distill cross-encoder": [
            "distill",
            "--student",
            "cross-encoder",
            "--labels",
            str(f["empty"]),
            "-o",
            out,
        ],
        "label --bundle": ["label", str(f["empty"]), "--bundle", str(f["root"] / "no-bundle"), "-o", out],
        "label --teacher": ["label", str(f["empty"]), "--teacher", str(f["root"] / "no-teacher"), "-o", out],
        "label --from-trec": ["label", str(f["empty"]), "--from-trec", str(f["empty"]), "-o", out],
        "label --from-results": ["label", "--from-results", str(f["empty"]), "-o", out],
        "label --from-reasonrank": ["label", "--from-reasonrank", str(f["empty"]), "-o", out],
        "rerank --bundle": ["rerank", str(f["empty"]), "-o", out, "--bundle", str(f["root"] / "no-bundle")],
        "rerank --teacher": [
            "rerank",
            str(f["empty"]),
            "-o",
            out,
            "--teacher",
            str(f["root"] / "no-teacher"),
        ],
    }[mode]


# (mode, the option as passed, the name the message must carry)
NOT_APPLICABLE: list[Any] = [
    ("export listwise-lm", ["--trt"], "--trt"),
    ("export listwise-lm", ["--optimize", "O1"], "--optimize"),
    ("export cross-encoder", ["--min-agreement", "0.9"], "--min-agreement"),
    ("export fp32", ["--isa", "avx2"], "--isa"),
    ("export fp32", ["--per-tensor"], "--per-tensor"),
    ("export listwise-lm fp32", ["--isa", "avx2"], "--isa"),
    ("export listwise-lm fp32", ["--int8-scheme", "dynamic"], "--int8-scheme"),
    ("export cross-encoder", ["--precision", "int8", "--int8-scheme", "dynamic"], "--int8-scheme"),
    ("export fp32", ["--int8-graph", "plain"], "--int8-graph"),
    ("export listwise-lm", ["--precision", "int8", "--int8-graph", "plain"], "--int8-graph"),
    ("distill listwise-lm", ["--loss", "ranknet"], "--loss"),
    ("distill listwise-lm", ["--targets", "linear"], "--targets"),
    ("distill listwise-lm", ["--list-size", "5"], "--list-size"),
    ("distill listwise-lm", ["--head-learning-rate", "1e-3"], "--head-learning-rate"),
    ("distill listwise-lm", ["--baseline-data", "data/scifact"], "--baseline-data"),
    ("distill cross-encoder", ["--config", "{config}"], "--config"),
    ("distill cross-encoder", ["--rationale"], "--rationale"),
    ("distill cross-encoder", ["--resume"], "--resume"),
    *[
        (mode, [option, value], option)
        for mode in ("label --bundle", "label --from-trec", "label --from-results", "label --from-reasonrank")
        for option, value in (
            ("--model", "m"),
            ("--window", "10"),
            ("--step", "5"),
            ("--top-k", "10"),
            ("--max-new-tokens", "64"),
        )
    ],
    *[
        (mode, ["--threads", "1"], "--threads")
        for mode in (
            "label --teacher",
            "label --from-trec",
            "label --from-results",
            "label --from-reasonrank",
        )
    ],
    ("label --from-results", ["{empty}"], "REQUESTS"),
    ("label --from-reasonrank", ["{empty}"], "REQUESTS"),
    *[
        ("rerank --bundle", [option, value], option)
        for option, value in (
            ("--model", "m"),
            ("--window", "10"),
            ("--step", "5"),
            ("--top-k", "10"),
            ("--max-new-tokens", "64"),
            ("--temperature", "0.5"),
            ("--concurrency", "2"),
            ("--max-passage-tokens", "64"),
            ("--tokenizer", "tok"),
        )
    ],
    ("rerank --teacher", ["--threads", "1"], "--threads"),
    ("rerank --teacher", ["--long-passages", "max"], "--long-passages"),
    ("rerank --teacher", ["--stride", "8"], "--stride"),
]


def _case_id(case: Any) -> str:
    values = case.values if hasattr(case, "values") else case
    return f"{values[0]}:{values[2]}"


@pytest.mark.parametrize(
    ("mode", "option", "name"), NOT_APPLICABLE, ids=[_case_id(c) for c in NOT_APPLICABLE]
)
def test_an_option_a_mode_cannot_honour_is_refused_by_name(
    mode: str, option: list[str], name: str, files: dict[str, Path]
) -> None:
    extra = [o.format(config=files["config"], empty=files["empty"]) for o in option]
    result = runner.invoke(app, [*_base(mode, files), *extra])
    assert result.exit_code != 0
    assert name in result.output, result.output
    assert not (files["root"] / "out").exists()


def test_refusals_name_every_offending_option_and_the_mode(files: dict[str, Path]) -> None:
    result = runner.invoke(
        app, [*_base("distill listwise-lm", files), "--loss", "ranknet", "--list-size", "5"]
    )
    assert result.exit_code == 2
    assert "--loss does not apply to --student listwise-lm" in result.output
    assert "--list-size does not apply to --student listwise-lm" in result.output


def test_an_applicable_option_passes_the_mode_check(files: dict[str, Path]) -> None:
    # --epochs applies to both students: the listwise run gets as far as asking for its config
    result = runner.invoke(app, [*_base("distill listwise-lm", files), "--epochs", "1"])
    assert result.exit_code == 2 and "needs --config" in result.output
