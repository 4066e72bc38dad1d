"""A step found in flight after a crash, settled by reading back what its action did."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.cli_runner import run_tocsin
from tests.engine_actions import calls
from tests.engine_support import HEAD, FlowInThread, settings_journal, start_flow
from tests.microsoft_support import fake_tenant, run_action, settings_for
from tests.pki_support import OFFICE, seeded_office
from tocsin.action_registry import ActionRegistry
from tocsin.actions import ActionContext
from tocsin.decisions import DecisionRefused
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.fake import SANDBOX_CLIENT_SECRET, FakeMicrosoft
from tocsin.integrations.microsoft.fake_devices import LAPTOP_NAME, office_workstation
from tocsin.integrations.pki import VAULT_TOKEN
from tocsin.journal import Journal, now
from tocsin.sandbox.tls import LoopbackCA
from tocsin.settings import Settings, StaticSecrets

pytestmark = pytest.mark.slow

STEPS = """\
steps:
  - id: act
    title: Act once
    action: test.count_reconciled
    with: {file: "{{ inputs.state }}/act"}
  - id: last
    title: Read what it did
    action: test.count
    with: {file: "{{ inputs.state }}/last-{{ steps.act.outputs.count }}"}
"""


@pytest.fixture(scope="module")
def journal(prefect_server: str) -> Iterator[Journal]:
    opened = settings_journal()
    yield opened
    opened.close()


def interrupted_run(journal: Journal, folder: Path, readback: str | None) -> FlowInThread:
    """A run whose `act` step was RUNNING when its process died, started again."""
    runbook_id = f"reconcile-{uuid.uuid4().hex[:8]}"
    ticket = f"REC-{uuid.uuid4().int % 10**9}"
    run, _ = journal.open_run(
        incident=ticket,
        runbook_id=runbook_id,
        runbook_version="1",
        runbook_digest="before-the-crash",
        inputs={"state": str(folder)},
        requested_by="U0REQUESTER",
        requested_via="test",
    )
    journal.set_step(run.id, "act", status="running", started_at=now())
    if readback is not None:
        (folder / "act.readback").write_text(readback)
    return start_flow(journal, HEAD.format(runbook_id=runbook_id) + STEPS, folder, ticket=ticket)


def kinds(journal: Journal, ticket: str) -> list[str]:
    return [event["kind"] for event in journal.events_of(ticket)]


def test_a_read_back_that_took_effect_finishes_the_step_with_its_outputs(
    journal: Journal, tmp_path: Path
) -> None:
    flow = interrupted_run(journal, tmp_path, "took 7")
    result = flow.finish()
    assert result["status"] == "succeeded", result
    assert calls(tmp_path / "act") == []  # never run again
    assert len(calls(tmp_path / "last-7")) == 1  # the later step read the outputs read back
    reconciled = [e for e in journal.events_of(flow.ticket) if e["kind"] == "step.reconciled"]
    assert reconciled[0]["data"]["effect"] == "took_effect"
    assert reconciled[0]["data"]["outputs"] == {"count": 7}
    assert "says took 7" in reconciled[0]["data"]["found"]
    from tocsin.running import audit_key_for
    from tocsin.settings import load_settings

    key = audit_key_for(load_settings())
    assert key is not None
    assert journal.verify(flow.ticket, key.public_key).ok


def test_a_read_back_that_did_not_take_effect_runs_the_step(
    journal: Journal, tmp_path: Path
) -> None:
    flow = interrupted_run(journal, tmp_path, "not")
    result = flow.finish()
    assert result["status"] == "succeeded", result
    assert len(calls(tmp_path / "act")) == 1  # run once, as if it never ran
    assert len(calls(tmp_path / "last-1")) == 1
    events = kinds(journal, flow.ticket)
    assert events.index("step.reconciled") < events.index("step.started")


@pytest.mark.parametrize("readback", ["unknown", "raise", "malformed"])
def test_a_read_back_that_cannot_tell_leaves_the_step_to_a_person(
    journal: Journal, tmp_path: Path, readback: str
) -> None:
    flow = interrupted_run(journal, tmp_path, readback)
    request = flow.request("act")
    assert request.kind == "in_doubt"
    events = kinds(journal, flow.ticket)
    expected = "step.reconciled" if readback == "unknown" else "step.reconcile_failed"
    assert expected in events
    flow.decide("act", "approve", "U0LEAD1")  # run it again
    result = flow.finish()
    assert result["status"] == "succeeded", result
    assert len(calls(tmp_path / "act")) == 1


def test_done_with_outputs_finishes_the_step_and_a_later_step_reads_them(
    journal: Journal, tmp_path: Path
) -> None:
    flow = interrupted_run(journal, tmp_path, "unknown")
    assert flow.request("act").kind == "in_doubt"
    given = run_tocsin("done", flow.ticket, "act", "--as", "U0LEAD1", "--output", "count=3")
    assert given.returncode == 0, given.stderr
    result = flow.finish()
    assert result["status"] == "succeeded", result
    assert calls(tmp_path / "act") == []  # it took effect: never run again
    assert len(calls(tmp_path / "last-3")) == 1
    done = [e for e in journal.events_of(flow.ticket) if e["kind"] == "step.done"]
    assert done[0]["data"]["outputs"] == {"count": 3}


def test_done_with_outputs_that_do_not_fit_is_refused_with_what_is_wrong(
    journal: Journal, tmp_path: Path
) -> None:
    flow = interrupted_run(journal, tmp_path, "unknown")
    flow.request("act")
    with pytest.raises(DecisionRefused) as unknown:
        flow.decide("act", "done", "U0LEAD1", outputs={"total": 3})
    assert "test.count_reconciled has no output total; its outputs are count" in str(unknown.value)
    with pytest.raises(DecisionRefused) as wrong:
        flow.decide("act", "done", "U0LEAD1", outputs={"count": "many"})
    assert "outputs that do not fit test.count_reconciled: count:" in str(wrong.value)
    with pytest.raises(DecisionRefused) as secret:
        flow.decide("act", "done", "U0LEAD1", outputs={"count": 4, "token": "x"})
    assert "is a secret" in str(secret.value) or "no output token" in str(secret.value)
    bad_json = run_tocsin("done", flow.ticket, "act", "--as", "U0LEAD1", "--outputs-json", "[1]")
    assert bad_json.returncode == 2 and "must be a JSON object" in bad_json.stderr
    assert flow.step("act").status == "waiting"  # type: ignore[union-attr]
    flow.decide("act", "done", "U0LEAD1", outputs={"count": 4})
    assert flow.finish()["status"] == "succeeded"
    assert len(calls(tmp_path / "last-4")) == 1


def test_done_without_outputs_fails_a_later_read_saying_how_to_give_them(
    journal: Journal, tmp_path: Path
) -> None:
    flow = interrupted_run(journal, tmp_path, "unknown")
    flow.request("act")
    flow.decide("act", "done", "U0LEAD1")
    result = flow.finish()
    assert result["status"] == "failed"
    assert f"give them with `tocsin done {flow.ticket} act --output count=...`" in result["reason"]


# the read-backs of real actions, against their fakes ---------------------------------------


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeMicrosoft, LoopbackCA]]:
    with fake_tenant(tmp_path_factory.mktemp("reconcile")) as started:
        yield started


@pytest.fixture
def microsoft(tenant: tuple[FakeMicrosoft, LoopbackCA]) -> tuple[FakeMicrosoft, Settings]:
    tenant[0].reset()
    return tenant[0], settings_for(tenant[0], tenant[1])


def read_back(name: str, params: dict[str, Any], settings: Settings) -> tuple[str, dict[str, Any]]:
    """Ask action ``name`` whether a call with ``params`` took effect, as a resume does."""
    definition = ActionRegistry.discover().get(name)
    context = ActionContext(
        incident="INC-13",
        step_id="step",
        secrets=StaticSecrets({CLIENT_SECRET: SANDBOX_CLIENT_SECRET}),
        settings=settings,
    )
    effect, outputs, _ = definition.reconcile_call(context, params)
    return str(effect), outputs


def test_defender_isolation_is_read_back_from_the_machines_latest_action(
    microsoft: tuple[FakeMicrosoft, Settings],
) -> None:
    fake, settings = microsoft
    with fake.lock:
        fake.tenant.machines.append(
            office_workstation("PC-2", "broker-office.example", datetime.now(UTC))
        )
    one = {"devices": [LAPTOP_NAME], "comment": "INC-13"}
    both = {"devices": [LAPTOP_NAME, "PC-2"], "comment": "INC-13"}
    assert read_back("defender.isolate_devices", both, settings) == ("did_not", {})
    assert read_back("defender.release_devices", both, settings)[0] == "took_effect"
    run_action("defender.isolate_devices", one, settings)
    assert read_back("defender.isolate_devices", both, settings)[0] == "unknown"
    effect, outputs = read_back("defender.isolate_devices", one, settings)
    assert effect == "took_effect"
    assert outputs["devices"][0]["isolated"] is True
    assert outputs["devices"][0]["action_id"]
    assert read_back("defender.release_devices", one, settings)[0] == "did_not"
    with fake.lock:
        assert len(fake.tenant.machine_actions) == 1  # reading back changed nothing


def test_an_entra_account_block_is_read_back_from_account_enabled(
    microsoft: tuple[FakeMicrosoft, Settings],
) -> None:
    fake, settings = microsoft
    user = {"user": "alice@broker-office.example"}
    # the compromised account is still enabled: blocking it again is safe
    assert read_back("microsoft.disable_user", user, settings) == ("did_not", {})
    assert read_back("microsoft.enable_user", user, settings)[0] == "took_effect"
    run_action("microsoft.disable_user", user, settings)
    effect, outputs = read_back("microsoft.disable_user", user, settings)
    assert effect == "took_effect"
    assert outputs["account_enabled"] is False and outputs["user_id"]
    assert "not known" in outputs["note"]  # what the read-back cannot tell, it says
    assert read_back("microsoft.enable_user", user, settings)[0] == "did_not"
    patches = [r for r in fake.requests if r.method == "PATCH"]
    assert len(patches) == 1  # reading back changed nothing


def test_pki_revocation_is_read_back_from_each_certificates_status_at_the_ca(
    tmp_path: Path,
) -> None:
    with seeded_office(tmp_path) as office:
        definition = ActionRegistry.discover().get("pki.revoke_certificates")
        context = ActionContext(
            incident="INC-14",
            step_id="step",
            secrets=StaticSecrets({VAULT_TOKEN: office.token}),
            settings=office.settings,
        )
        effect, _, _ = definition.reconcile_call(context, {"office": OFFICE})
        assert effect == "did_not"
        revoked = office.run("pki.revoke_certificates", {"office": OFFICE})
        effect, outputs, found = definition.reconcile_call(context, {"office": OFFICE})
        assert effect == "took_effect"
        assert sorted(outputs["serials"]) == sorted(revoked["serials"])
        assert f"all {len(revoked['serials'])} certificate(s)" in found
