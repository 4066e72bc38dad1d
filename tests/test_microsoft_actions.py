"""The Microsoft 365 actions against the fake tenant over HTTPS on loopback, as steps call them:
each one's happy path, its re-run changing nothing, and the tenant's state afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import microsoft_support
from tests.microsoft_support import fake_tenant, run_action
from tocsin.action_registry import ActionRegistry
from tocsin.errors import IntegrationError
from tocsin.integrations.microsoft.fake import (
    ATTACKER_FORWARD,
    ATTACKER_PHONE,
    KNOWN_GOOD_AUTHENTICATOR,
    SANDBOX_USER,
    FakeMicrosoft,
)
from tocsin.sandbox.tls import LoopbackCA
from tocsin.settings import Settings

USER = SANDBOX_USER


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeMicrosoft, LoopbackCA]]:
    with fake_tenant(tmp_path_factory.mktemp("microsoft")) as started:
        yield started


# The Microsoft modules' shared per-test fixtures (tests.microsoft_support).
fake = microsoft_support.fake
settings = microsoft_support.settings


def changes(fake: FakeMicrosoft) -> list[tuple[str, str]]:
    return [
        (r.method, r.path)
        for r in fake.requests
        if r.method in ("PATCH", "DELETE", "POST") and "/oauth2/" not in r.path
    ]


def test_every_action_is_declared_with_its_plan_sentence_and_flags() -> None:
    registry = ActionRegistry.discover()
    discovered = {d.name for d in registry if d.name.startswith("microsoft.")}
    # Those of this file; the newer actions' declarations are checked in their own test files.
    names = {
        "microsoft.disable_user",
        "microsoft.enable_user",
        "microsoft.revoke_sessions",
        "microsoft.list_auth_methods",
        "microsoft.remove_auth_methods",
        "microsoft.list_oauth_grants",
        "microsoft.revoke_oauth_grants",
        "microsoft.recent_sign_ins",
        "microsoft.list_inbox_rules",
        "microsoft.remove_inbox_rules",
        "microsoft.confirm_compromised",
        "microsoft.check_forwarding",
        "microsoft.disable_forwarding",
    }
    assert discovered >= names
    readers = {
        "list_auth_methods",
        "list_oauth_grants",
        "recent_sign_ins",
        "list_inbox_rules",
        "check_forwarding",
    }
    for name in names:
        definition = registry.get(name)
        assert definition.idempotent, name
        assert definition.destructive == (name.split(".")[1] not in readers), name
        assert definition.output_names, name
        params = (
            {"user": USER, "keep": ["x"]}
            if "keep" in definition.parameters.model_fields
            else {"user": USER}
        )
        sentence = definition.describe_call(definition.parameters.model_validate(params))
        assert USER in sentence, (name, sentence)
    plan = registry.get("microsoft.remove_auth_methods")
    sentence = plan.describe_call(
        plan.parameters.model_validate({"user": USER, "keep": [KNOWN_GOOD_AUTHENTICATOR]})
    )
    assert KNOWN_GOOD_AUTHENTICATOR in sentence and "default method goes last" in sentence


def test_disable_then_enable_user_each_undoing_the_other_and_rerun_changes_nothing(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    disabled = run_action("microsoft.disable_user", {"user": USER}, settings)
    assert disabled["was_enabled"] is True and disabled["account_enabled"] is False
    assert disabled["changed"] is True and disabled["user"] == USER
    assert fake.user(USER)["accountEnabled"] is False
    again = run_action("microsoft.disable_user", {"user": USER.upper()}, settings)
    assert again["changed"] is False and again["account_enabled"] is False
    assert [c for c in changes(fake) if c[0] == "PATCH"] == [
        ("PATCH", f"/v1.0/users/{disabled['user_id']}")
    ]

    enabled = run_action("microsoft.enable_user", {"user": disabled["user_id"]}, settings)
    assert enabled["changed"] is True and fake.user(USER)["accountEnabled"] is True
    assert run_action("microsoft.enable_user", {"user": USER}, settings)["changed"] is False


def test_revoke_sessions_signs_the_user_out_and_says_what_it_cannot(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    first = run_action("microsoft.revoke_sessions", {"user": USER}, settings)
    second = run_action("microsoft.revoke_sessions", {"user": USER}, settings)
    assert first["revoked"] is True and second["revoked"] is True
    assert fake.revocations == [first["user_id"]] * 2
    assert "up to 1 h" in first["note"]


def test_auth_methods_are_listed_and_the_attackers_removed_keeping_the_known_good(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    listed = run_action("microsoft.list_auth_methods", {"user": USER}, settings)
    labels = {m["label"]: m for m in listed["methods"]}
    assert labels[ATTACKER_PHONE]["type"] == "phone"
    assert labels[KNOWN_GOOD_AUTHENTICATOR]["type"] == "microsoftAuthenticator"
    assert labels["password"]["removable"] is False

    removed = run_action(
        "microsoft.remove_auth_methods",
        {"user": USER, "keep": [KNOWN_GOOD_AUTHENTICATOR]},
        settings,
    )
    assert sorted(m["label"] for m in removed["removed"]) == sorted(
        [ATTACKER_PHONE, "alice.recovery@mailbox.example.org"]
    )
    assert {m["label"] for m in removed["kept"]} == {KNOWN_GOOD_AUTHENTICATOR, "password"}
    remaining = {m["@odata.type"] for m in fake.methods_of(USER)}
    assert remaining == {
        "#microsoft.graph.passwordAuthenticationMethod",
        "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod",
    }
    assert [m["type"] for m in removed["remaining"]] == ["password", "microsoftAuthenticator"]
    # The deletions went by their real paths, in one $batch.
    (batch,) = [r for r in fake.requests if r.path == "/v1.0/$batch"]
    urls = sorted(item["url"] for item in batch.json()["requests"])
    assert urls[0].endswith("/authentication/emailMethods/3ddfcfc8-9383-446f-83cc-3ab9be4be18f")
    assert urls[1].endswith("/authentication/phoneMethods/3179e48a-750b-4051-897c-87b9720928f7")

    again = run_action(
        "microsoft.remove_auth_methods",
        {"user": USER, "keep": [KNOWN_GOOD_AUTHENTICATOR]},
        settings,
    )
    assert again["removed"] == [] and len(fake.methods_of(USER)) == 2


def test_the_default_method_goes_last_when_nothing_is_kept(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    # The Authenticator is the default: Entra refuses it while the others remain.
    removed = run_action("microsoft.remove_auth_methods", {"user": USER, "keep": []}, settings)
    assert removed["removed"][-1]["label"] == KNOWN_GOOD_AUTHENTICATOR
    assert [m["type"] for m in removed["remaining"]] == ["password"]


def test_the_default_method_cannot_go_while_a_kept_one_remains_and_that_is_said(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    with pytest.raises(IntegrationError) as caught:
        run_action(
            "microsoft.remove_auth_methods",
            {"user": USER, "keep": [ATTACKER_PHONE.replace(" ", "")]},
            settings,
        )
    assert (
        f"microsoftAuthenticator {KNOWN_GOOD_AUTHENTICATOR} (the default method)"
        in caught.value.message
    )
    assert "make a kept method the default" in caught.value.hint
    # What could go went: the e-mail method; the phone was kept, the default stays.
    assert {
        m.get("phoneNumber") or m.get("displayName")
        for m in fake.methods_of(USER)
        if "password" not in m["@odata.type"]
    } == {
        ATTACKER_PHONE,
        KNOWN_GOOD_AUTHENTICATOR,
    }


def test_a_misspelt_known_good_method_removes_nothing(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    with pytest.raises(
        IntegrationError, match='no sign-in method matching "Alice\'s iPhone 12"'
    ) as caught:
        run_action(
            "microsoft.remove_auth_methods", {"user": USER, "keep": ["Alice's iPhone 12"]}, settings
        )
    assert KNOWN_GOOD_AUTHENTICATOR in caught.value.hint and caught.value.retryable is False
    assert len(fake.methods_of(USER)) == 4 and changes(fake) == []


def test_oauth_grants_are_listed_with_their_mail_scopes_and_the_attackers_revoked(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    listed = run_action("microsoft.list_oauth_grants", {"user": USER}, settings)
    by_app = {g["app"]: g for g in listed["grants"]}
    assert set(by_app) == {"Mail Backup Pro", "Zoom"}  # the tenant-wide grant is not the user's
    assert by_app["Mail Backup Pro"]["risky_scopes"] == [
        "Mail.ReadWrite",
        "Mail.Send",
        "MailboxSettings.ReadWrite",
    ]
    assert by_app["Zoom"]["risky_scopes"] == []

    revoked = run_action(
        "microsoft.revoke_oauth_grants", {"user": USER, "keep": ["zoom"]}, settings
    )
    assert [g["app"] for g in revoked["revoked"]] == ["Mail Backup Pro"]
    assert [g["app"] for g in revoked["kept"]] == ["Zoom"]
    assert [g["scope"].split()[0] for g in fake.grants_of(USER)] == ["openid"]
    assert any(g["consentType"] == "AllPrincipals" for g in fake.tenant.grants)

    again = run_action("microsoft.revoke_oauth_grants", {"user": USER, "keep": ["Zoom"]}, settings)
    assert again["revoked"] == [] and len(fake.grants_of(USER)) == 1


def test_recent_sign_ins_are_summarised_for_the_window(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    summary = run_action("microsoft.recent_sign_ins", {"user": USER, "hours": 60}, settings)
    assert summary["count"] == 6  # the 70 h old one is outside the window
    assert summary["countries"] == {"BE": 2, "NG": 3, "DE": 1}
    assert summary["ips"]["102.89.34.11"] == 3
    assert summary["apps"]["OfficeHome"] == 2
    assert summary["failures"] == 1
    assert summary["sign_ins"][0]["app"] == "Microsoft Teams"  # newest first
    (read,) = [r for r in fake.requests if r.path == "/v1.0/auditLogs/signIns"]
    assert f"userId eq '{summary['user_id']}' and createdDateTime ge " in read.query["$filter"][0]
    again = run_action("microsoft.recent_sign_ins", {"user": USER, "hours": 60}, settings)
    assert {k: v for k, v in again.items() if k != "since"} == {
        k: v for k, v in summary.items() if k != "since"
    }


def test_sign_ins_follow_next_links_page_by_page(fake: FakeMicrosoft, settings: Settings) -> None:
    summary = run_action("microsoft.recent_sign_ins", {"user": USER, "max_sign_ins": 5}, settings)
    assert summary["count"] == 5
    summary = run_action("microsoft.recent_sign_ins", {"user": USER, "hours": 720}, settings)
    assert summary["count"] == 7


def test_inbox_rules_are_flagged_and_the_attackers_removed_keeping_the_users_own(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    listed = run_action("microsoft.list_inbox_rules", {"user": USER}, settings)
    by_name = {r["name"]: r for r in listed["rules"]}
    assert by_name["Clients"]["flagged"] is False
    assert (
        by_name["."]["reasons"][0]
        == f"forwards mail to {ATTACKER_FORWARD} (outside the organisation)"
    )
    assert "deletes matching mail" in by_name[".."]["reasons"]
    assert "moves mail to RSS Feeds" in by_name["..."]["reasons"]
    assert listed["flagged"] == 3 and "-IncludeHidden" in listed["note"]

    removed = run_action("microsoft.remove_inbox_rules", {"user": USER}, settings)
    assert sorted(r["name"] for r in removed["removed"]) == [".", "..", "..."]
    assert removed["unflagged"] == ["Clients"]
    assert [r["displayName"] for r in fake.rules_of(USER)] == ["Clients"]

    again = run_action("microsoft.remove_inbox_rules", {"user": USER}, settings)
    assert again["removed"] == [] and again["unflagged"] == ["Clients"]


def test_a_flagged_rule_the_user_confirms_is_kept(fake: FakeMicrosoft, settings: Settings) -> None:
    removed = run_action("microsoft.remove_inbox_rules", {"user": USER, "keep": [".."]}, settings)
    assert [r["name"] for r in removed["kept"]] == [".."]
    assert sorted(r["displayName"] for r in fake.rules_of(USER)) == ["..", "Clients"]


def test_confirm_compromised_marks_the_user_and_is_repeatable(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    first = run_action("microsoft.confirm_compromised", {"user": USER}, settings)
    run_action("microsoft.confirm_compromised", {"user": USER}, settings)
    assert first["confirmed"] is True and fake.confirmed_compromised == [first["user_id"]] * 2


def test_without_entra_id_p2_confirm_compromised_says_the_licence_is_missing(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    fake.tenant.p2 = False
    with pytest.raises(IntegrationError) as caught:
        run_action("microsoft.confirm_compromised", {"user": USER}, settings)
    assert "lacks the licence" in caught.value.message and "Entra ID P2" in caught.value.hint
    assert caught.value.retryable is False


def test_the_whole_clean_up_leaves_only_what_is_the_users(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    for name, params in (
        ("microsoft.disable_user", {}),
        ("microsoft.revoke_sessions", {}),
        ("microsoft.remove_inbox_rules", {}),
        ("microsoft.remove_auth_methods", {"keep": [KNOWN_GOOD_AUTHENTICATOR]}),
        ("microsoft.revoke_oauth_grants", {"keep": ["Zoom"]}),
        ("microsoft.confirm_compromised", {}),
    ):
        run_action(name, {"user": USER, **params}, settings)
    user_id = fake.user(USER)["id"]
    assert fake.user(USER)["accountEnabled"] is False
    assert [r["displayName"] for r in fake.rules_of(USER)] == ["Clients"]
    assert [m.get("displayName") for m in fake.methods_of(USER)] == [None, KNOWN_GOOD_AUTHENTICATOR]
    assert [g["clientId"] for g in fake.grants_of(USER)] == [
        sp["id"] for sp in fake.tenant.service_principals if sp["displayName"] == "Zoom"
    ]
    assert fake.confirmed_compromised == [user_id] and fake.revocations == [user_id]
    assert fake.tokens_issued == 1, "msal's token cache served every step"


def test_the_sandbox_starts_a_phished_tenant_over_tls_for_the_runs_user() -> None:
    from tocsin.actions import ActionContext
    from tocsin.integration import SandboxSeed
    from tocsin.integrations.microsoft import integration
    from tocsin.sandbox.assembly import Sandbox
    from tocsin.settings import load_settings

    carol = "carol@broker-office.example"
    with Sandbox(load_settings(), SandboxSeed(inputs={"user": carol})) as sandbox:
        fake = sandbox.fake("microsoft", FakeMicrosoft)
        microsoft = integration.settings_of(sandbox.settings)
        assert microsoft.graph_url == microsoft.authority_host == fake.url
        assert fake.url.startswith("https://127.0.0.1:") and microsoft.ca_bundle is not None
        context = ActionContext("INC-13", "rules", sandbox.secrets, sandbox.settings)
        rules = (
            ActionRegistry.discover()
            .get("microsoft.list_inbox_rules")
            .invoke(context, {"user": carol})
        )
        assert rules["user"] == carol and rules["flagged"] == 3
        assert any(carol in note for note in sandbox.notes)


CONTAIN_RUNBOOK = """\
runbook: ms-contain
version: 1
title: Contain a phished Microsoft 365 user
summary: Block sign-in, remove the attacker's inbox rules and sign-in methods
severity: high
sources: [{title: Test, document: test.txt}]
inputs:
  user: {type: email, description: Sign-in address of the phished user}
steps:
  - id: block
    title: Block sign-in
    action: microsoft.disable_user
    with: {user: "{{ inputs.user }}"}
    undo: {action: microsoft.enable_user, with: {user: "{{ inputs.user }}"}}
  - id: rules
    title: Remove the attacker's inbox rules
    action: microsoft.remove_inbox_rules
    with: {user: "{{ inputs.user }}"}
  - id: methods
    title: Remove the attacker's sign-in methods
    action: microsoft.remove_auth_methods
    with: {user: "{{ inputs.user }}", keep: ["Alice's iPhone 13"]}
"""


@pytest.mark.slow
def test_the_actions_run_in_a_runbook_in_the_sandbox(prefect_server: str, tmp_path: Path) -> None:
    from tests.cli_runner import ROOT, run_tocsin
    from tocsin.running import journal_for
    from tocsin.settings import load_settings

    runbook = tmp_path / "ms-contain.yaml"
    runbook.write_text(CONTAIN_RUNBOOK)
    data = tmp_path / "data"
    result = run_tocsin(
        "run",
        str(runbook),
        "--ticket",
        "MS-1",
        "--set",
        f"user={USER}",
        env={
            "PYTHONPATH": str(ROOT),
            "TOCSIN_DATA_DIR": str(data),
            "TOCSIN_PREFECT_API_URL": prefect_server,
        },
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    journal = journal_for(load_settings(data_dir=data))
    try:
        run = journal.find_run("MS-1", "ms-contain")
        assert run is not None
        steps = {s: journal.step(run.id, s) for s in ("block", "rules", "methods")}
        assert all(step is not None and step.status == "succeeded" for step in steps.values())
        block, rules, methods = (steps[s] for s in ("block", "rules", "methods"))
        assert block is not None and block.outputs["changed"] is True
        assert rules is not None and sorted(r["name"] for r in rules.outputs["removed"]) == [
            ".",
            "..",
            "...",
        ]
        assert methods is not None
        assert [m["label"] for m in methods.outputs["kept"]] == [
            "password",
            KNOWN_GOOD_AUTHENTICATOR,
        ]
    finally:
        journal.close()
