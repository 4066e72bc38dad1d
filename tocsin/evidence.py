"""What ``tocsin audit`` and ``tocsin report`` do: verify, export and report an incident's trail."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tocsin.audit import (
    AuditKey,
    Verification,
    export_lines,
    load_public_key,
    public_path,
    read_export,
    verify_chain,
    write_export,
)
from tocsin.errors import InputError
from tocsin.journal import Journal, now
from tocsin.running import journal_for
from tocsin.settings import Settings


def _open_journal(settings: Settings, ticket: str) -> Journal:
    journal = journal_for(settings)
    if ticket not in journal.incidents():
        journal.close()
        raise InputError(
            f"no audit records for incident {ticket}",
            "`tocsin status` lists the incidents this journal knows",
        )
    return journal


def default_public_key(settings: Settings) -> tuple[Ed25519PublicKey | None, Path | None]:
    """The public half of the configured audit key, when it is on this machine."""
    path = public_path(settings.audit_key_path)
    if path.exists():
        return load_public_key(path), path
    if settings.audit_key_path.exists():
        return AuditKey.load(settings.audit_key_path).public_key, settings.audit_key_path
    return None, None


def verify_incident(
    settings: Settings, ticket: str, *, public_key_file: Path | None, anchor: str | None
) -> tuple[Verification, Path | None]:
    """Verify the incident's chain in the journal; returns the key file used (None: none)."""
    if public_key_file is not None:
        public_key: Ed25519PublicKey | None = load_public_key(public_key_file)
        used: Path | None = public_key_file
    else:
        public_key, used = default_public_key(settings)
    journal = _open_journal(settings, ticket)
    try:
        return journal.verify(ticket, public_key, anchor=anchor), used
    finally:
        journal.close()


def verify_export_file(path: Path, public_key_file: Path, anchor: str | None) -> Verification:
    """Verify an export offline, with the public key alone."""
    public_key = load_public_key(public_key_file)
    export = read_export(path)
    return verify_chain(
        export.incident, export.records, export.checkpoints, public_key, anchor=anchor
    )


def export_incident(settings: Settings, ticket: str) -> tuple[str, int]:
    """The incident's audit trail as JSON Lines text, and its number of lines."""
    journal = _open_journal(settings, ticket)
    try:
        records = journal.audit_records(ticket)
        checkpoints = journal.checkpoints_of(ticket)
    finally:
        journal.close()
    out = io.StringIO()
    count = write_export(export_lines(ticket, records, checkpoints, exported_at=now()), out)
    return out.getvalue(), count


def flow_run_states(settings: Settings, flow_run_ids: list[str]) -> dict[str, str]:
    """Prefect's state name of each flow run, when a Prefect server is reachable; else empty."""
    from tocsin.embedded import running_server

    if not flow_run_ids or (settings.prefect_api_url is None and running_server(settings) is None):
        return {}
    try:
        from tocsin.embedded import ensure_server

        ensure_server(settings)  # only points the client at the server found running
        from prefect.client.orchestration import get_client

        states: dict[str, str] = {}
        with get_client(sync_client=True) as client:
            for flow_run_id in flow_run_ids:
                flow_run = client.read_flow_run(flow_run_id)  # type: ignore[arg-type]
                if flow_run.state is not None and flow_run.state.name:
                    states[flow_run_id] = flow_run.state.name
        return states
    except Exception:  # the report is built from the audit trail; Prefect only adds detail
        return {}


def incident_report(
    settings: Settings,
    ticket: str,
    *,
    fmt: str,
    lang: str,
    generated_at: datetime | None = None,
    with_prefect: bool = True,
) -> bytes:
    """The post-incident report of ``ticket`` in ``fmt`` (md, html, pdf, json) and ``lang``."""
    from tocsin.report import build_report, render

    public_key, _ = default_public_key(settings)
    journal = _open_journal(settings, ticket)
    try:
        records = journal.audit_records(ticket)
        verification = verify_chain(ticket, records, journal.checkpoints_of(ticket), public_key)
    finally:
        journal.close()
    flow_run_ids = sorted(
        {
            str(record.data["flow_run_id"])
            for record in records
            if record.kind in ("run.started", "run.resumed") and record.data.get("flow_run_id")
        }
    )
    states = flow_run_states(settings, flow_run_ids) if with_prefect else {}
    report = build_report(
        ticket, records, verification, flow_states=states, generated_at=generated_at
    )
    rendered: Any = render(report, fmt, lang)  # type: ignore[arg-type]  # checked by the CLI
    return bytes(rendered)
