"""Set-up shared by the tests that run the gateway against the fake Slack and Jira.

Runs read their settings from the environment (a run started by the gateway reads them
as `tocsin run` would), so a module sets ``TOCSIN_*`` variables for its lifetime and
puts them back afterwards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tocsin.gateway import Gateway
from tocsin.integrations.jira.fake import (
    SANDBOX_JIRA_TOKEN,
    SANDBOX_JIRA_USER,
    SANDBOX_JIRA_WEBHOOK_SECRET,
    FakeJira,
)
from tocsin.integrations.slack.fake import SANDBOX_BOT_TOKEN, FakeSlack
from tocsin.journal import Journal
from tocsin.settings import load_settings


def service_settings(
    folder: Path,
    *,
    signing_secret: str,
    slack: FakeSlack | None = None,
    jira: FakeJira | None = None,
) -> dict[str, str]:
    """The ``TOCSIN_*`` variables of a data folder in ``folder``, runbooks in
    ``folder/runbooks``, and the fakes given."""
    values = {
        "TOCSIN_DATA_DIR": str(folder / "data"),
        "TOCSIN_RUNBOOK_PATHS": json.dumps([str(folder / "runbooks")]),
        "TOCSIN_SECRET_SLACK_SIGNING_SECRET": signing_secret,
    }
    if slack is not None:
        values.update(
            {
                "TOCSIN_SLACK__API_URL": f"{slack.url}/api/",
                "TOCSIN_ANNOUNCE__PROGRESS_EVERY_SECONDS": "0",
                "TOCSIN_SECRET_SLACK_BOT_TOKEN": SANDBOX_BOT_TOKEN,
            }
        )
    if jira is not None:
        values.update(
            {
                "TOCSIN_JIRA__URL": jira.url,
                "TOCSIN_JIRA__USER": SANDBOX_JIRA_USER,
                "TOCSIN_SECRET_JIRA_API_TOKEN": SANDBOX_JIRA_TOKEN,
                "TOCSIN_SECRET_JIRA_WEBHOOK_SECRET": SANDBOX_JIRA_WEBHOOK_SECRET,
            }
        )
    (folder / "runbooks").mkdir(exist_ok=True)
    return values


@contextmanager
def environment_variables(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the block, then restore what was there."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def settings_journal() -> Iterator[Journal]:
    """The journal the current settings name, closed afterwards."""
    from tocsin.running import journal_for

    opened = journal_for(load_settings())
    try:
        yield opened
    finally:
        opened.close()


@contextmanager
def gateway_from_settings() -> Iterator[Gateway]:
    """A gateway built from the current settings, with the Jira they name (closed afterwards)."""
    from tocsin.integration import ticket_system
    from tocsin.settings import EnvironmentSecrets

    settings = load_settings()
    tickets = ticket_system(settings, EnvironmentSecrets())
    gateway = Gateway(settings, tickets=tickets)
    try:
        yield gateway
    finally:
        gateway.close()
