"""``tocsin integrations check jira``: the credentials sign in, the account may browse,
comment and attach, and the webhook secret is set.

``GET /rest/api/2/myself`` answers who the credentials are (Cloud: basic auth with the
account e-mail and an API token; Data Center: a bearer personal access token) and
``GET /rest/api/2/mypermissions`` whether the account holds the project permissions Tocsin
uses in at least one project (without a project key: the incident projects are not known
here). Both change nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from tocsin.errors import TocsinError
from tocsin.integration import CheckResult
from tocsin.integrations.jira.client import WEBHOOK_SECRET, JiraTickets
from tocsin.settings import SecretStore, Settings

PERMISSIONS = {
    "BROWSE_PROJECTS": "Browse projects (read the incident ticket)",
    "ADD_COMMENTS": "Add comments (progress, gates, audit heads)",
    "CREATE_ATTACHMENTS": "Create attachments (the report)",
}
"""The project permissions the Tocsin account needs, each with what for."""


def check(settings: Settings, secrets: SecretStore) -> Sequence[CheckResult]:
    """Who the credentials sign in as, their project permissions; whether the webhook secret is set."""
    try:
        tickets = JiraTickets.from_settings(settings, secrets)
    except TocsinError as exc:
        return [CheckResult.problem("credentials", exc), _webhook_secret(secrets)]
    account = _account(tickets)
    results = [account]
    if account.ok:
        results.append(_permissions(tickets))
    return [*results, _webhook_secret(secrets)]


def _permissions(tickets: JiraTickets) -> CheckResult:
    try:
        held = tickets.my_permissions(list(PERMISSIONS))
    except TocsinError as exc:
        return CheckResult.problem("permissions", exc)
    missing = [key for key, ok in held.items() if not ok]
    if missing:
        return CheckResult(
            "permissions",
            False,
            "the Tocsin account lacks "
            + "; ".join(PERMISSIONS[key] for key in missing)
            + " in every project",
            "grant them to the Tocsin account in the permission scheme of the incident "
            "projects (Project settings → Permissions), or to a group or project role it is in",
        )
    return CheckResult(
        "permissions",
        True,
        "may browse, comment and attach (in at least one project: Jira says so per project)",
    )


def _account(tickets: JiraTickets) -> CheckResult:
    try:
        me = tickets.myself()
    except TocsinError as exc:
        if getattr(exc, "status_code", None) == 404:
            return CheckResult(
                "credentials",
                False,
                "the site answered 404 to GET /rest/api/2/myself: no Jira REST API there",
                "set settings.jira.url (TOCSIN_JIRA__URL) to the site's base URL, like "
                "https://broker-support.atlassian.net",
            )
        return CheckResult.problem("credentials", exc)
    name = me.get("emailAddress") or me.get("name") or me.get("accountId") or "?"
    kind = "Cloud, API token" if tickets.user else "Data Center, personal access token"
    if me.get("active") is False:
        return CheckResult(
            "credentials",
            False,
            f"signs in as {me.get('displayName')} ({name}), but the account is deactivated",
            "reactivate the Tocsin account in Jira's user management",
        )
    return CheckResult(
        "credentials",
        True,
        f"signs in at {tickets.base_url} as {me.get('displayName')} ({name}; {kind})",
    )


def _webhook_secret(secrets: SecretStore) -> CheckResult:
    if secrets.get(WEBHOOK_SECRET):
        return CheckResult("webhook secret", True, f"{WEBHOOK_SECRET} is set")
    return CheckResult(
        "webhook secret",
        False,
        f"the secret {WEBHOOK_SECRET} is not set: the gateway cannot tell Jira's webhooks "
        "from forged ones, so no run starts from a ticket",
        f"set TOCSIN_SECRET_{WEBHOOK_SECRET.upper()} to the secret of the Jira webhook "
        "(Jira settings → System → WebHooks → the Tocsin webhook → Secret)",
    )
