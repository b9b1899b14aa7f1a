"""Every file in broken/ must produce exactly the problems its ``# expect:`` lines list."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from topslot.config.campaigns import load_campaign_file, load_campaigns

HERE = Path(__file__).parent
BROKEN = HERE / "broken"
TEMPLATES = HERE / "templates"
EXPECT = re.compile(r"^# expect: (?:(?P<path>[^:\s]+):)?(?P<line>\d+):(?P<column>\d+): (?P<message>.+)$")


def expectations(file: Path) -> list[tuple[Path, int, int, str]]:
    found = []
    for text in file.read_text(encoding="utf-8").splitlines():
        m = EXPECT.match(text)
        if m:
            where = (HERE / m["path"]) if m["path"] else file
            found.append((where.resolve(), int(m["line"]), int(m["column"]), m["message"]))
    return found


CORPUS = sorted(BROKEN.glob("*.yaml"))


def test_corpus_is_big_enough_and_annotated() -> None:
    assert len(CORPUS) >= 18
    for file in CORPUS:
        assert expectations(file), f"{file.name} has no '# expect:' line"


@pytest.mark.parametrize("file", CORPUS, ids=lambda p: p.stem)
def test_broken_file_reports_exactly_its_expected_problems(file: Path) -> None:
    campaign, problems = load_campaign_file(file, TEMPLATES)

    assert campaign is None
    expected = expectations(file)
    got = {(Path(p.path).resolve(), p.line, p.column) for p in problems}
    assert got == {(path, line, column) for path, line, column, _ in expected}, [str(p) for p in problems]
    for path, line, column, message in expected:
        messages = [p.message for p in problems if (Path(p.path).resolve(), p.line, p.column) == (path, line, column)]
        assert any(message in m for m in messages), f"{message!r} not in {messages}"


def test_duplicate_campaign_id_across_files(tmp_path: Path) -> None:
    result = load_campaigns(HERE / "dup_ids", TEMPLATES)

    assert list(result.campaigns) == ["spring-sale"]
    assert result.sources["spring-sale"].name == "a-first.yaml"
    second = HERE / "dup_ids" / "b-copy.yaml"
    (path, line, column, message), = expectations(second)
    (problem,) = result.problems
    assert (Path(problem.path).resolve(), problem.line, problem.column) == (path, line, column)
    assert message in problem.message and "a-first.yaml" in problem.message


def test_whole_corpus_directory_reports_every_file(tmp_path: Path) -> None:
    result = load_campaigns(BROKEN, TEMPLATES)

    assert result.campaigns == {}
    files_with_problems = {Path(p.path).resolve() for p in result.problems}
    for file in CORPUS:
        wanted = {path for path, *_ in expectations(file)}
        assert wanted <= files_with_problems, file.name
