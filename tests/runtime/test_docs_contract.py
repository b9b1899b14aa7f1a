"""The README's two commands, CI and the operations table stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, get_args, get_origin

from topslot.settings import Settings, env_var_for

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


def commands_in_readme() -> list[str]:
    return re.findall(r"^(python3 -m venv \.venv .*)$", README, flags=re.MULTILINE)


def test_readme_gives_the_wheel_path_and_ci_tries_it() -> None:
    (wheel,) = re.findall(r"^(python3 -m venv v .*)$", README, flags=re.MULTILINE)
    assert wheel == "python3 -m venv v && v/bin/pip install topslot-*.whl && v/bin/topslot init && v/bin/topslot demo"
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    script = (REPO / ".ci" / "wheel").read_text(encoding="utf-8")
    assert ".ci/wheel" in ci.splitlines() and (REPO / ".ci" / "wheel").stat().st_mode & 0o111
    for step in ("twine\" check", "topslot\" init", "topslot\" validate", "topslot\" demo"):
        assert step in script, step


def test_readme_has_the_two_commands_and_ci_runs_the_test_one_verbatim() -> None:
    main, tests = commands_in_readme()
    assert main.endswith(".venv/bin/topslot demo")
    assert tests.endswith(".venv/bin/pytest")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in ci
    assert "export TOPSLOT_TEST_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test" in ci
    assert ci.strip().splitlines()[-1] == tests  # the README's test command, verbatim, last
    assert ci.index(".venv/bin/ruff check daemon") < ci.index(".ci/typecheck") < ci.index(tests)  # checkers first (mypy)
    assert (REPO / ".ci" / "run").stat().st_mode & 0o111


def test_every_setting_is_documented_with_its_variable() -> None:
    ops = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    for name, field in Settings.model_fields.items():
        nested = getattr(field.annotation, "model_fields", None)
        args = getattr(field.annotation, "__args__", ())
        sections = _sections(args[1]) if len(args) == 2 else []
        if nested is None and sections:
            nested = {sub: None for section in sections for sub in section.model_fields}  # dict[str, Section]
            prefix = (name, "<name>")
        else:
            prefix = (name,)
        if nested:
            for sub in nested:
                path = (*prefix, sub)
                assert f"`{'.'.join(path)}`" in ops, path
                assert f"`{env_var_for(path)}`" in ops, env_var_for(path)
        elif getattr(field.annotation, "__origin__", None) is dict:  # a map of secrets: `name.<id>`
            assert f"`{name}.<" in ops and f"`{env_var_for((name,))}__<" in ops, name
        else:
            assert f"`{name}`" in ops and f"`{env_var_for((name,))}`" in ops, name


def _sections(annotation: object) -> list[type]:
    """The settings sections a map's values may be: one model, or each model of an (annotated) union."""
    if hasattr(annotation, "model_fields"):
        return [annotation]  # type: ignore[list-item]
    inner = get_args(annotation)
    if get_origin(annotation) is Annotated:
        return _sections(inner[0])
    return [member for member in inner if hasattr(member, "model_fields")]


def test_every_command_is_in_the_operations_command_table() -> None:
    import typer.main

    from topslot.cli import app

    ops = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    table = ops[ops.index("## Commands") :]
    table = table[: table.index("\n## ", 1)]

    def walk(command: object, prefix: tuple[str, ...]) -> list[str]:
        subs = getattr(command, "commands", None)
        if not subs:
            return [" ".join(prefix)]
        return [path for name, sub in sorted(subs.items()) for path in walk(sub, (*prefix, name))]

    paths = walk(typer.main.get_command(app), ())
    assert "campaigns pause" in paths and "status" in paths
    missing = [path for path in paths if f"| `topslot {path}" not in table]
    assert not missing, f"add these commands to the table under '## Commands' in docs/operations.md: {missing}"
