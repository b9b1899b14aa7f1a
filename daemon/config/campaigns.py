"""Load every campaign file, validate it, and report every problem with its file, line and column."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment
from pydantic import ValidationError

from topslot.campaign import Campaign
from topslot.campaign_version import CampaignVersion, file_digest, version_of
from topslot.config.model_errors import describe, validation_problems
from topslot.config.template_checks import check_templates
from topslot.errors import InvalidInput, Problem
from topslot.templating import TemplateRead, make_environment, recording_reads, templates_used
from topslot.yaml_source import YamlDocument, load_yaml

CAMPAIGN_SUFFIXES = (".yaml", ".yml")
_REQUIRED = "id:, name:, channels:, audience:, schedule:, landing_page: and content:"


@dataclass
class LoadResult:
    """Valid campaigns by id, every problem found, which file each campaign came from and its
    version (``topslot.campaign_version``: its file and templates as read)."""

    campaigns: dict[str, Campaign] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    sources: dict[str, Path] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    versions: dict[str, CampaignVersion] = field(default_factory=dict)

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
    the id it claims with where that id is written (for the duplicate-id check across files), and
    the campaign's version (with the campaign). Plain data, so a child process can load a file and
    send the result back."""

    path: Path
    campaign: Campaign | None
    problems: tuple[Problem, ...]
    claimed_id: str | None = None
    id_position: tuple[int, int] = (1, 1)
    version: CampaignVersion | None = None


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
            if loaded.version is not None:
                result.versions[campaign.id] = loaded.version
    return result


def load_file(
    path: Path, templates_dir: Path, env: Environment | None = None, check: CampaignCheck | None = None
) -> FileLoad:
    """Load and validate one campaign file; never raises for anything the file contains. A valid
    campaign comes with its version: the file's bytes as parsed and every template it uses, as read
    while it was checked (``topslot.templating.templates_used``)."""
    env = env or make_environment(templates_dir)
    with recording_reads() as reads:
        campaign, problems, doc = _load(path, templates_dir, env)
        if campaign is not None and check is not None:
            problems = sorted(set(check(campaign, doc)))
            campaign = None if problems else campaign
        version = _version(campaign, doc, env, reads) if campaign is not None else None
    raw_id = doc.get(("id",))
    claimed = raw_id if isinstance(raw_id, str) and raw_id else None
    position = doc.position_of(("id",)) if claimed else (1, 1)
    return FileLoad(path, campaign, tuple(problems), claimed, position, version)


def _version(
    campaign: Campaign, doc: YamlDocument, env: Environment, reads: dict[str, TemplateRead]
) -> CampaignVersion | None:
    """The campaign's version: its file as read, and every template it uses (read now if its check
    did not read it: a template cached by the environment, or only included in a branch the sample
    contact did not take)."""
    if doc.sha256 is None or doc.mtime_ns is None:
        return None
    content = campaign.content
    roots = [name for name in (
        content.email and content.email.html, content.email and content.email.text,
        content.sms and content.sms.body, content.im and content.im.body,
    ) if name]  # fmt: skip
    inline = [content.email.subject] if content.email else []
    if content.im is not None:
        inline += [content.im.title or "", *content.im.variables.values()]
    used = templates_used(env, reads, roots, inline)
    templates = {name: file_digest(read.text.encode()) for name, read in used.items()}
    return version_of(doc.sha256, templates, [doc.mtime_ns, *(read.mtime_ns for read in used.values())])


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
