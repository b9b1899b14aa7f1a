"""Load every campaign file, validate it, and report every problem with its file, line and column."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment
from pydantic import ValidationError

from topslot.campaign import Campaign
from topslot.config.model_errors import describe, validation_problems
from topslot.config.template_checks import check_templates
from topslot.errors import InvalidInput, Problem
from topslot.templating import make_environment
from topslot.yaml_source import YamlDocument, load_yaml

CAMPAIGN_SUFFIXES = (".yaml", ".yml")
_REQUIRED = "id:, name:, channels:, audience:, schedule:, landing_page: and content:"


@dataclass
class LoadResult:
    """Valid campaigns by id, every problem found, and which file each campaign came from."""

    campaigns: dict[str, Campaign] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    sources: dict[str, Path] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self) -> None:
        if self.problems:
            raise InvalidInput(self.problems)


def campaign_files(campaigns_dir: Path) -> list[Path]:
    """The campaign files of a directory (``*.yaml``/``*.yml``, not hidden), sorted by name."""
    return sorted(
        p
        for p in Path(campaigns_dir).iterdir()
        if p.suffix in CAMPAIGN_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


@dataclass(frozen=True)
class FileLoad:
    """What one campaign file gave: its campaign (only if it has no problem at all), every problem,
    and the id it claims with where that id is written (for the duplicate-id check across files).
    Plain data, so a child process can load a file and send the result back."""

    path: Path
    campaign: Campaign | None
    problems: tuple[Problem, ...]
    claimed_id: str | None = None
    id_position: tuple[int, int] = (1, 1)


CampaignCheck = Callable[[Campaign, YamlDocument], list[Problem]]
"""A further check of a valid campaign (e.g. that it compiles for sending with these settings),
given its document to locate what it finds; problems refuse it."""


def load_campaign_file(
    path: Path | str, templates_dir: Path | str, *, env: Environment | None = None
) -> tuple[Campaign | None, list[Problem]]:
    """One campaign file → (the campaign if it has no problem at all, every problem)."""
    loaded = load_file(Path(path), Path(templates_dir), env)
    return loaded.campaign, list(loaded.problems)


def load_campaigns(
    campaigns_dir: Path | str, templates_dir: Path | str, check: CampaignCheck | None = None
) -> LoadResult:
    """Every campaign file in ``campaigns_dir``; a file with any problem contributes no campaign."""
    campaigns_dir, templates_dir = Path(campaigns_dir), Path(templates_dir)
    if not campaigns_dir.is_dir():
        return missing_directory(campaigns_dir)
    env = make_environment(templates_dir)
    return collect(load_file(path, templates_dir, env, check) for path in campaign_files(campaigns_dir))


def missing_directory(campaigns_dir: Path) -> LoadResult:
    return LoadResult(problems=[Problem(str(campaigns_dir), 1, 1, "no such directory of campaign files")])


def collect(loads: Iterable[FileLoad]) -> LoadResult:
    """Put per-file loads together (in file order): the first file to claim an id keeps it."""
    result = LoadResult()
    owners: dict[str, Path] = {}
    for loaded in loads:
        result.files.append(loaded.path)
        campaign, problems = loaded.campaign, list(loaded.problems)
        raw_id = loaded.claimed_id
        if raw_id:
            if raw_id in owners:
                message = f"campaign id '{raw_id}' is already used by {owners[raw_id]}"
                problems.append(Problem(str(loaded.path), *loaded.id_position, message))
                campaign = None
            else:
                owners[raw_id] = loaded.path
        result.problems.extend(sorted(set(problems)))
        if campaign is not None and not problems:
            result.campaigns[campaign.id] = campaign
            result.sources[campaign.id] = loaded.path
    return result


def load_file(
    path: Path, templates_dir: Path, env: Environment | None = None, check: CampaignCheck | None = None
) -> FileLoad:
    """Load and validate one campaign file; never raises for anything the file contains."""
    campaign, problems, doc = _load(path, templates_dir, env)
    if campaign is not None and check is not None:
        problems = sorted(set(check(campaign, doc)))
        campaign = None if problems else campaign
    raw_id = doc.get(("id",))
    claimed = raw_id if isinstance(raw_id, str) and raw_id else None
    return FileLoad(path, campaign, tuple(problems), claimed, doc.position_of(("id",)) if claimed else (1, 1))


def _load(
    path: Path, templates_dir: Path, env: Environment | None
) -> tuple[Campaign | None, list[Problem], YamlDocument]:
    doc = load_yaml(path)
    problems = list(doc.problems)
    if doc.syntax_error:
        return None, problems, doc
    if doc.empty:
        problems.append(doc.problem((1, 1), f"the file is empty; a campaign file is a mapping with {_REQUIRED}"))
        return None, problems, doc
    if not isinstance(doc.data, dict):
        where = doc.positions.get((), (1, 1))
        found = describe(doc.data)
        message = f"expected a mapping of keys ({_REQUIRED}) at the top of the file, found {found}"
        problems.append(doc.problem(where, message))
        return None, problems, doc
    campaign: Campaign | None = None
    try:
        campaign = Campaign.model_validate(doc.data)
    except ValidationError as exc:
        problems += validation_problems(exc, doc, Campaign)
    problems += check_templates(doc, campaign, templates_dir, env)
    problems = sorted(set(problems))
    return (campaign if not problems else None), problems, doc
