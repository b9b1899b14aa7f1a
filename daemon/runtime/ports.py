"""The daemon's calls into the config loader and the campaign compiler, in one place."""

from __future__ import annotations

from pathlib import Path

from topslot.campaign import Campaign
from topslot.channels.registry import provider_problems
from topslot.config import LoadResult
from topslot.config import load_campaigns as load_campaign_dir
from topslot.config.campaigns import CampaignCheck
from topslot.errors import InvalidInput, Problem
from topslot.pacing import quiet_hours_problems
from topslot.rendering import compile_campaign
from topslot.settings import Settings
from topslot.yaml_source import YamlDocument


def load_campaigns(campaigns_dir: Path, templates_dir: Path, settings: Settings) -> LoadResult:
    """Load and validate every campaign file, with file paths resolved (the registry compares them).

    A campaign must also be sendable with these settings (``sending_check``): one that is not is
    reported like any other problem and is not loaded."""
    return resolved(load_campaign_dir(campaigns_dir, templates_dir, sending_check(templates_dir, settings)))


def sending_check(templates_dir: Path, settings: Settings) -> CampaignCheck:
    """A valid campaign must also compile for sending (CSS inlining, link rewriting, compliance
    footer, SMS size), name providers the settings have, and not send inside quiet hours unless it
    says how (``topslot.pacing.quiet_hours_problems``)."""

    def check(campaign: Campaign, doc: YamlDocument) -> list[Problem]:
        found = provider_problems(campaign, settings) + quiet_hours_problems(campaign, settings.quiet_hours.rules())
        problems = [doc.problem(doc.position_of(path), message) for path, message in found]
        try:
            compile_campaign(campaign, templates_dir, settings.compliance)
        except InvalidInput as exc:
            problems.extend(exc.problems)
        return problems

    return check


def resolved(result: LoadResult) -> LoadResult:
    """The same result with file paths resolved (the registry compares them)."""
    return LoadResult(
        campaigns=result.campaigns,
        problems=result.problems,
        sources={cid: path.resolve() for cid, path in result.sources.items()},
        files=[path.resolve() for path in result.files],
        versions=result.versions,
    )
