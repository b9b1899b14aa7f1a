"""A campaign's version as loading computes it: the campaign file's bytes and every template it uses
(named, extended, imported, included, even in a branch the sample contact does not take), by name."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from runtime.conftest import campaign_yaml

from topslot.campaign_version import CampaignVersion, mtime_of
from topslot.config.campaigns import load_campaigns


def campaign_text(cid: str, subject: str) -> str:
    """The runtime tests' small campaign, with a text part and its own subject."""
    text = campaign_yaml(cid).replace("html: offer/email.html.j2", "html: mail.html.j2\n    text: mail.txt.j2")
    return text.replace('subject: "A small gift"', f'subject: "{subject}"')


TEMPLATES = {
    "base.html.j2": "<html><body>{% block body %}{% endblock %}</body></html>\n",
    "macros.j2": '{% macro unsub(url) %}<a href="{{ url }}">Unsubscribe</a>{% endmacro %}\n',
    "rare.j2": "<p>only for some</p>\n",
    "mail.html.j2": (
        '{% extends "base.html.j2" %}{% import "macros.j2" as m %}'
        '{% block body %}<p>Hi</p>{% if contact.attributes.get("vip") %}{% include "rare.j2" %}{% endif %}'
        "{{ m.unsub(unsubscribe_url) }}{% endblock %}\n"
    ),
    "mail.txt.j2": "Hi. Unsubscribe: {{ unsubscribe_url }}\n",
    "subject_part.j2": "A gift",
    "other.j2": "not used by the campaign\n",
}


def setup(root: Path, *, subject: str = "A small gift", ids: tuple[str, ...] = ("spring",)) -> Path:
    (root / "campaigns").mkdir(parents=True)
    (root / "templates").mkdir()
    for cid in ids:
        (root / "campaigns" / f"{cid}.yaml").write_text(campaign_text(cid, subject))
    for name, text in TEMPLATES.items():
        (root / "templates" / name).write_text(text)
    return root


def versions(root: Path) -> dict[str, CampaignVersion]:
    loaded = load_campaigns(root / "campaigns", root / "templates")
    assert loaded.ok, [str(p) for p in loaded.problems]
    assert set(loaded.versions) == set(loaded.campaigns)
    return loaded.versions


def test_every_template_the_campaign_uses_counts_and_no_other(tmp_path: Path) -> None:
    root = setup(tmp_path)
    first = versions(root)["spring"]
    assert first == versions(root)["spring"]  # loading again: the same version
    (root / "templates" / "other.j2").write_text("edited, still unused\n")
    assert versions(root)["spring"].digest == first.digest
    seen = {first.digest}
    for name in ("base.html.j2", "macros.j2", "rare.j2", "mail.html.j2", "mail.txt.j2"):
        path = root / "templates" / name
        path.write_text(path.read_text() + "\n")
        digest = versions(root)["spring"].digest
        assert digest not in seen, name  # the extended, imported, conditionally included ones too
        seen.add(digest)
    campaign = root / "campaigns" / "spring.yaml"
    campaign.write_text(campaign.read_text() + "# a comment is a change of the file\n")
    assert versions(root)["spring"].digest not in seen


def test_a_template_included_by_a_literal_name_in_the_subject_counts(tmp_path: Path) -> None:
    root = setup(tmp_path, subject='{% include \\"subject_part.j2\\" %} for you')
    before = versions(root)["spring"].digest
    (root / "templates" / "subject_part.j2").write_text("A present")
    assert versions(root)["spring"].digest != before


def test_the_same_files_anywhere_give_the_same_version_and_campaigns_share_templates(tmp_path: Path) -> None:
    here = setup(tmp_path / "node-a", ids=("spring", "summer"))
    there = tmp_path / "elsewhere" / "node-b"
    shutil.copytree(here, there)
    a, b = versions(here), versions(there)
    assert a["spring"].digest == b["spring"].digest and a["summer"].digest == b["summer"].digest
    (there / "templates" / "base.html.j2").write_text("<html>{% block body %}{% endblock %}</html>\n")
    b2 = versions(there)  # one load: the second campaign's templates are read for it too (no cache hides them)
    assert b2["spring"].digest != a["spring"].digest and b2["summer"].digest != a["summer"].digest


def test_the_mtime_is_the_newest_of_the_files_the_campaign_uses(tmp_path: Path) -> None:
    root = setup(tmp_path)
    base = 1_800_000_000_000_000_000
    for i, path in enumerate(sorted([*(root / "templates").iterdir(), root / "campaigns" / "spring.yaml"])):
        os.utime(path, ns=(base + i, base + i * 1_000_000))
    os.utime(root / "templates" / "rare.j2", ns=(base, base + 7_777_000_000))
    os.utime(root / "templates" / "other.j2", ns=(base, base + 9_999_000_000))  # unused: does not count
    assert versions(root)["spring"].mtime == mtime_of(base + 7_777_000_000)
