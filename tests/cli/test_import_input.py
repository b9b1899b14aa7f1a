"""The file checks every import command shares (``daemon/cli/import_input.py``): before anything is
imported, a file that is not there or cannot be read is ONE line on stderr and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import run

COMMANDS = {
    "contacts": ("contacts", "import"),
    "events": ("events", "import"),
    "conversions": ("conversions", "import"),
    "coupons": ("coupons", "import", "spring"),
    "suppressions": ("suppressions", "import"),
}


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
@pytest.mark.parametrize("encoding", [[], ["--encoding", "gb18030"]], ids=["sniffed", "--encoding"])
def test_a_file_that_cannot_be_read_is_one_line_and_nothing_is_imported(
    config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...], encoding: list[str]
) -> None:
    path = tmp_path / "input.csv"
    path.write_text("code\nA\n", encoding="utf-8")
    real_open = Path.open

    def refuse(self: Path, *args: object, **kwargs: object) -> object:
        if self == path:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", refuse)  # root reads every file: refuse it this way
    code, _, err = run(*command, str(path), *encoding, "--config", str(config_dir))

    assert (code, err) == (2, f"{path}: cannot be read: Permission denied\n")
    assert not (tmp_path / "var" / "topslot.db").exists()  # checked before the database is opened


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_directory_or_a_missing_file_is_no_such_file(config_dir: Path, tmp_path: Path, command: tuple[str, ...]) -> None:
    for path in (tmp_path, tmp_path / "missing.csv"):
        code, _, err = run(*command, str(path), "--config", str(config_dir))
        assert (code, err) == (2, f"{path}: no such file\n")
