"""The README's tour works as written: its Python snippet runs, and every `rrdistill` command line in
it names a real command with options that command accepts."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
from pathlib import Path

import typer

from rrdistill.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _tour_snippet() -> str:
    tour = README.read_text(encoding="utf-8").split("## The 5-minute tour", 1)[1]
    return re.search(r"```python\n(.*?)```", tour, flags=re.S).group(1)  # type: ignore[union-attr]


def test_the_tour_snippet_runs_as_written(tiny_bundle: Path, tmp_path: Path, monkeypatch) -> None:
    snippet = _tour_snippet()
    bundle = re.search(r'Reranker\.load\("([^"]+)"\)', snippet).group(1)  # type: ignore[union-attr]
    shutil.copytree(tiny_bundle, tmp_path / bundle)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet, "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # top_k=2
    indexes = [int(line.split()[0]) for line in lines]
    assert len(set(indexes)) == 2 and set(indexes) <= {0, 1, 2}
    assert all(len(line.split()) == 3 for line in lines)


def _command_lines() -> list[list[str]]:
    lines = []
    for block in _blocks("bash"):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip().rstrip("&").strip()
            if line.startswith("rrdistill "):
                lines.append(shlex.split(line))
    return lines


def test_every_rrdistill_command_in_the_readme_exists_with_its_options() -> None:
    command = typer.main.get_command(app)
    lines = _command_lines()
    assert len(lines) >= 15
    for argv in lines:
        name = argv[1]
        assert name in command.commands, f"README: `rrdistill {name}` is not a command"  # type: ignore[attr-defined]
        sub = command.commands[name]  # type: ignore[attr-defined]
        rest = argv[2:]
        if hasattr(sub, "commands"):  # a group (`rrdistill models fetch …`): check its subcommand
            assert rest and rest[0] in sub.commands, f"README: `rrdistill {name} {rest[:1]}` is not a command"
            sub, rest = sub.commands[rest[0]], rest[1:]
        known = {opt for param in sub.params for opt in (*param.opts, *param.secondary_opts)}
        for token in rest:
            if token.startswith("-"):
                option = token.split("=", 1)[0]
                assert option in known, f"README: `rrdistill {name}` has no option {option}"


def test_readme_names_no_machine_paths() -> None:
    text = README.read_text(encoding="utf-8")
    home = os.path.expanduser("~")
    assert "/work/" not in text and (home == "/" or home not in text)
