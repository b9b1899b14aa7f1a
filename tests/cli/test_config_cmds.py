"""``topslot validate`` and ``topslot schema`` as a user runs them."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_support import EXAMPLE
from cli_support import run as run_in_process
from typer.testing import CliRunner

from topslot.campaign_version import model_version
from topslot.cli import app
from topslot.cli.config_cmds import schema_text
from topslot.runtime.ports import load_campaigns
from topslot.scheduling.plan_run import plan_campaign
from topslot.settings import load_settings
from topslot.store import ledger
from topslot.store.db import prepare_database

REPO = Path(__file__).resolve().parents[2]
BROKEN = REPO / "tests" / "config" / "broken"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "topslot", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_validate_shipped_config_exits_0() -> None:
    done = run("validate", "config", cwd=REPO)

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "ok: 1 campaign(s) valid (mothers-day-2027)",
        "  mothers-day-2027: email: outbox (files, not sent) (contacts' email)",  # no smtp: configured
        "  mothers-day-2027: sms: outbox (files, not sent) (contacts' phone)",
    ]


def test_validate_reports_every_problem_with_relative_paths_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "config" / "campaigns").mkdir(parents=True)
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    shutil.copy(REPO / "config/topslot.yaml", tmp_path / "config/topslot.yaml")
    shutil.copy(REPO / "config/campaigns/mothers-day-2027.yaml", tmp_path / "config/campaigns/good.yaml")
    shutil.copy(BROKEN / "several_errors.yaml", tmp_path / "config/campaigns/bad.yaml")
    text = (tmp_path / "config/campaigns/bad.yaml").read_text().replace("good/", "mothers-day/")
    (tmp_path / "config/campaigns/bad.yaml").write_text(text)

    done = run("validate", "config", cwd=tmp_path)

    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines == [
        "config/campaigns/bad.yaml:8:24: channels[2]: unknown channel 'fax'; choose 'email', 'sms' or 'im'",
        "config/campaigns/bad.yaml:16:20: schedule.slots[1]: slot '7:3' is not HH:MM"
        " (24-hour, two digits each, e.g. '07:30')",
        "config/campaigns/bad.yaml:17:22: schedule.fallback_timezone: 'Europe/Pariss' is not an IANA time zone"
        " (e.g. 'Asia/Shanghai', 'America/New_York')",
        "config/campaigns/bad.yaml:18:3: schedule: unknown key 'per_recepient'; did you mean 'per_recipient'?",
    ]
    assert done.stderr.strip() == "error: 4 problem(s) in 1 file(s); 1 of 2 campaign(s) valid"


def test_validate_reports_what_keeps_a_campaign_from_being_sent(tmp_path: Path) -> None:
    """No sender identity / postal address in topslot.yaml: the campaign is valid YAML but cannot go out."""
    (tmp_path / "config" / "campaigns").mkdir(parents=True)
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    shutil.copy(REPO / "config/campaigns/mothers-day-2027.yaml", tmp_path / "config/campaigns/good.yaml")

    done = run("validate", "config", cwd=tmp_path)

    assert done.returncode == 1
    assert "compliance.postal_address is required to send email" in done.stdout
    assert "0 of 1 campaign(s) valid" in done.stderr


def test_validate_with_templates_option_and_missing_dir(tmp_path: Path) -> None:
    runner = CliRunner()
    config = tmp_path / "cfg"
    (config / "campaigns").mkdir(parents=True)
    shutil.copy(BROKEN.parent / "dup_ids" / "a-first.yaml", config / "campaigns")

    ok = runner.invoke(app, ["validate", str(config), "--templates", str(BROKEN.parent / "templates")])
    missing_templates = runner.invoke(app, ["validate", str(config)])
    no_dir = runner.invoke(app, ["validate", str(tmp_path / "nope")])

    assert ok.exit_code == 0, ok.output
    assert missing_templates.exit_code == 1
    assert "template 'good/sms.txt.j2' not found" in missing_templates.output
    assert no_dir.exit_code == 2


def test_schema_command_prints_the_committed_schema() -> None:
    result = CliRunner().invoke(app, ["schema"])

    assert result.exit_code == 0
    assert result.stdout == schema_text()
    committed = (REPO / "docs" / "campaign.schema.json").read_text(encoding="utf-8")
    assert committed == result.stdout, "run: topslot schema > docs/campaign.schema.json"


def test_schema_describes_the_campaign_for_editors() -> None:
    schema = json.loads(schema_text())

    assert schema["title"] == "topslot campaign"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"id", "name", "channels", "audience", "schedule", "landing_page", "content"}
    schedule = schema["$defs"]["Schedule"]["properties"]
    assert schedule["arrive_within"]["default"] == "10m"
    assert schedule["slots"]["items"]["pattern"]
    assert "from" in schema["$defs"]["EmailContent"]["properties"]


def test_validate_names_the_variable_for_a_secret_in_topslot_yaml_and_that_variable_works(tmp_path: Path) -> None:
    config = tmp_path / "config"
    (config / "campaigns").mkdir(parents=True)
    (config / "topslot.yaml").write_text("signing_key_id: k9\nsigning_keys:\n  k9: key-in-the-wrong-place-0123\n")

    refused = run("validate", "config", cwd=tmp_path)

    assert refused.returncode == 2
    assert refused.stdout.splitlines() == [
        "config/topslot.yaml:1:1: signing_key_id 'k9' names no key: no signing_keys are configured "
        "(set TOPSLOT_SIGNING_KEYS__K9)",
        "config/topslot.yaml:3:3: 'signing_keys.k9' is a secret and must not be in topslot.yaml; "
        "set TOPSLOT_SIGNING_KEYS__K9 (environment) or a credential file named signing_keys__k9 "
        "(in $CREDENTIALS_DIRECTORY or $TOPSLOT_SECRETS_DIR)"
    ]
    assert "key-in-the-wrong-place" not in refused.stdout + refused.stderr

    (config / "topslot.yaml").write_text("signing_key_id: k9\n")  # moved where the message said
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TOPSLOT_")}
    done = subprocess.run(
        [sys.executable, "-m", "topslot", "validate", "config"], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, env={**env, "PYTHONPATH": str(REPO), "TOPSLOT_SIGNING_KEYS__K9": "key-in-the-right-place-0123"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr.strip() == "ok: 0 campaign(s) valid (no files in config/campaigns)"


def test_validate_checks_the_im_provider_and_says_which_contact_column_it_needs(tmp_path: Path) -> None:
    (tmp_path / "config" / "campaigns").mkdir(parents=True)
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    settings = (REPO / "config/topslot.yaml").read_text() + (
        "im:\n  wecom: {kind: webhook, url: 'https://gw.shop.example/topslot', rate_per_second: 0.3}\n"
    )
    (tmp_path / "config" / "topslot.yaml").write_text(settings)
    campaign = (REPO / "config/campaigns/mothers-day-2027.yaml").read_text().replace(
        "channels: [email, sms]", "channels: [email, sms, im]"
    ).replace(
        "  sms: {body: mothers-day/sms.txt.j2}\n",
        "  sms: {body: mothers-day/sms.txt.j2}\n  im: {provider: wecom, body: mothers-day/im.txt.j2, title: Gift}\n",
    )
    (tmp_path / "config/campaigns/c.yaml").write_text(campaign)
    env_secret = {"TOPSLOT_IM__WECOM__SECRET": "s" * 32}

    done = run_env("validate", "config", cwd=tmp_path, env=env_secret)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "  mothers-day-2027: im: wecom (contacts' im_wecom)" in done.stderr.splitlines()

    (tmp_path / "config/campaigns/c.yaml").write_text(campaign.replace("provider: wecom", "provider: dingtalk"))
    done = run_env("validate", "config", cwd=tmp_path, env=env_secret)
    assert done.returncode == 1
    (line,) = done.stdout.splitlines()
    assert line.startswith("config/campaigns/c.yaml:") and "IM provider 'dingtalk' is not in the settings (im: wecom)" in line


def run_env(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "topslot", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )  # fmt: skip


def shipped_copy(tmp_path: Path) -> Path:
    """The shipped configuration and templates, copied into ``tmp_path``; returns the templates dir."""
    (tmp_path / "config" / "campaigns").mkdir(parents=True)
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    shutil.copy(REPO / "config/topslot.yaml", tmp_path / "config/topslot.yaml")
    shutil.copy(REPO / "config/campaigns/mothers-day-2027.yaml", tmp_path / "config/campaigns/good.yaml")
    return tmp_path / "templates"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"sms.txt.j2": "Hello café {{ unsubscribe_url }}\n".encode("latin-1")},
            "templates/mothers-day/sms.txt.j2:1:10: the template is not UTF-8 text; save it as UTF-8",
        ),
        (
            {"sms.txt.j2": b"Hi {% include 'mothers-day/part.txt' %}", "part.txt": b"ok\n\xff\xfe"},
            "templates/mothers-day/part.txt:2:1: the template is not UTF-8 text; save it as UTF-8",
        ),
        (
            {"sms.txt.j2": b"a" * (1024 * 1024 + 1)},
            "templates/mothers-day/sms.txt.j2:1:1: the template is larger than 1024 KiB, the limit here; "
            "is it the right file?",
        ),
    ],
    ids=["not utf-8", "included, not utf-8", "too large"],
)
def test_validate_reports_a_template_it_cannot_read_as_one_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes], expected: str
) -> None:
    templates = shipped_copy(tmp_path)
    for name, data in files.items():
        (templates / "mothers-day" / name).write_bytes(data)
    monkeypatch.chdir(tmp_path)

    done = CliRunner().invoke(app, ["validate", "config"])

    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    assert done.exit_code == 1
    assert done.stdout.splitlines() == [expected]
    assert done.stderr.strip() == "error: 1 problem(s) in 1 file(s); 0 of 1 campaign(s) valid"


def test_validate_reads_templates_where_the_settings_say_like_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped_copy(tmp_path)
    (tmp_path / "templates").rename(tmp_path / "site-templates")  # not next to the config dir
    settings = (tmp_path / "config/topslot.yaml").read_text().replace("templates_dir: templates", "templates_dir: x")
    (tmp_path / "config/topslot.yaml").write_text(settings)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOPSLOT_TEMPLATES_DIR", str(tmp_path / "site-templates"))

    done = CliRunner().invoke(app, ["validate", "config"])
    assert done.exit_code == 0, done.output
    assert done.stderr.splitlines()[0] == "ok: 1 campaign(s) valid (mothers-day-2027)"

    monkeypatch.delenv("TOPSLOT_TEMPLATES_DIR")  # topslot.yaml's templates_dir: x, relative to the working dir
    done = CliRunner().invoke(app, ["validate", "config"])
    assert done.exit_code == 1
    assert "template 'mothers-day/email.html.j2' not found (looked for x/mothers-day/email.html.j2)" in done.stdout

    done = CliRunner().invoke(app, ["validate", "config", "--templates", "site-templates"])  # the option wins
    assert done.exit_code == 0, done.output


def test_validate_warns_of_each_planned_bucket_that_cannot_fit_its_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped_copy(tmp_path)
    campaign_file = tmp_path / "config/campaigns/good.yaml"
    campaign_file.write_text(campaign_file.read_text().replace("arrive_within: 10m", "arrive_within: 5s"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOPSLOT_SMTP__SLOW__HOST", "127.0.0.1")  # never connected to by validate
    monkeypatch.setenv("TOPSLOT_SMTP__SLOW__RATE_PER_SECOND", "0.1")  # every email bucket needs ≥ 10 s
    done = CliRunner().invoke(app, ["validate", "config"])
    assert done.exit_code == 0, done.output
    assert "warning" not in done.stderr  # no ledger yet, and validate does not make one
    assert not (tmp_path / "var/topslot.db").exists()

    assert run_in_process("contacts", "import", str(EXAMPLE / "contacts.csv"), "--config", "config")[0] == 0
    assert run_in_process("events", "import", str(EXAMPLE / "events.csv"), "--config", "config")[0] == 0  # buyers

    async def plan_into_the_ledger() -> None:  # as the daemon does when the campaign is loaded
        settings = load_settings("config")
        campaign = load_campaigns(settings.campaigns_dir, settings.templates_dir, settings).campaigns["mothers-day-2027"]
        engine = await prepare_database(settings.database_url)
        now = datetime(2027, 5, 1, tzinfo=UTC)
        try:
            await ledger.record_campaign(engine, campaign, model_version(campaign).digest, now)
            await plan_campaign(engine, campaign, settings, now, write=True)
        finally:
            await engine.dispose()

    asyncio.run(plan_into_the_ledger())
    done = CliRunner().invoke(app, ["validate", "config"])
    assert done.exit_code == 0, done.output
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert warnings, done.stderr
    for line in warnings:
        assert line.startswith("warning: mothers-day-2027: bucket 2027-05-"), line
        assert " at 0.1/s need " in line and "more than the 5 s window" in line, line
