"""What ``tocsin audit`` and ``tocsin report`` do: verify, export and report an incident's trail."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tocsin.audit import (
    EXPORT_REASON,
    AnchorPlace,
    AuditKey,
    AuditRecord,
    Verification,
    check_published_heads,
    export_lines,
    load_public_key,
    public_path,
    read_export,
    verify_chain,
    write_export,
)
from tocsin.errors import ConfigurationError, InputError
from tocsin.journal import Journal, now
from tocsin.running import journal_for
from tocsin.settings import SecretStore, Settings

_log = logging.getLogger(__name__)


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
    settings: Settings,
    ticket: str,
    *,
    public_key_file: Path | None,
    anchor: str | None,
    check_anchors: bool = False,
) -> tuple[Verification, Path | None]:
    """Verify the incident's chain in the journal; returns the key file used (None: none).

    The records and checkpoints are read in one snapshot. ``check_anchors``: also read
    the heads published in Slack and on the ticket, where they can be reached.
    """
    if public_key_file is not None:
        public_key: Ed25519PublicKey | None = load_public_key(public_key_file)
        used: Path | None = public_key_file
    else:
        public_key, used = default_public_key(settings)
    journal = _open_journal(settings, ticket)
    try:
        records, signed = journal.audit_trail(ticket)
        result = verify_chain(ticket, records, signed, public_key, anchor=anchor)
        if check_anchors:
            check_published_heads(result, published_heads(settings, journal, ticket, records))
        return result, used
    finally:
        journal.close()


def verify_export_file(path: Path, public_key_file: Path, anchor: str | None) -> Verification:
    """Verify an export offline, with the public key alone."""
    public_key = load_public_key(public_key_file)
    export = read_export(path)
    return verify_chain(
        export.incident, export.records, export.checkpoints, public_key, anchor=anchor, export=True
    )


@dataclass(frozen=True)
class Export:
    """An incident's trail as JSON Lines, and whether it could be signed."""

    text: str
    lines: int
    verification: Verification
    """The trail as it was read for the export; not signed when it is not intact."""

    @property
    def signed(self) -> bool:
        return self.verification.ok


def export_incident(settings: Settings, ticket: str) -> Export:
    """The incident's audit trail as JSON Lines, signed over its last record.

    Records and checkpoints are read in one snapshot, verified, and, when intact, a
    checkpoint (reason ``export``) is signed over the last record and written after it,
    so that a cut-off end of the file is caught. A trail that is not intact is written
    without that signature (its problems are in ``verification``).
    """
    journal = _open_journal(settings, ticket)
    try:
        key = journal.audit_key
        if key is None:
            raise ConfigurationError(
                "exporting the audit trail signs its last record, and there is no audit "
                f"signing key at {settings.audit_key_path}",
                "export where Tocsin's runs sign (the machine holding the key), or set "
                "TOCSIN_AUDIT__KEY_PATH to the key",
            )
        records, signed = journal.audit_trail(ticket)
    finally:
        journal.close()
    exported_at = now()
    verification = verify_chain(ticket, records, signed, key.public_key)
    if verification.ok and records:
        last = records[-1]
        signed = [
            *signed,
            key.checkpoint(
                incident=ticket, seq=last.seq, head=last.hash, at=exported_at, reason=EXPORT_REASON
            ),
        ]
    out = io.StringIO()
    count = write_export(export_lines(ticket, records, signed, exported_at=exported_at), out)
    return Export(out.getvalue(), count, verification)


def published_heads(
    settings: Settings,
    journal: Journal,
    ticket: str,
    records: list[AuditRecord],
    secrets: SecretStore | None = None,
) -> list[AnchorPlace]:
    """The heads published for ``ticket`` in each place this machine is set up to read
    (each integration reads its own: the Slack anchor channel and incident thread with
    the bot token, the ticket's comments...). A place the trail says a head was published
    to, but that cannot be read here, is unreachable."""
    from tocsin.integration import HeadsQuery
    from tocsin.integration import published_heads as read_back
    from tocsin.settings import EnvironmentSecrets

    recorded = [
        str(r.data.get("where") or "") for r in records if r.kind == "audit.checkpoint_anchored"
    ]
    query = HeadsQuery(
        settings,
        secrets if secrets is not None else EnvironmentSecrets(),
        journal,
        ticket,
        recorded,
        records,
    )
    return read_back(query)


def flow_run_states(settings: Settings, flow_run_ids: list[str]) -> dict[str, str] | None:
    """Prefect's state name of each flow run it knows; None when no Prefect server could be
    read (logged as a warning: the report is built from the audit trail all the same)."""
    import httpx

    from tocsin.embedded import prefect_pointed_at, running_server

    if not flow_run_ids:
        return {}
    runs = ", ".join(flow_run_ids)
    api_url = settings.prefect_api_url
    if api_url is None:
        found = running_server(settings)  # a report never starts a server
        if found is None:
            _log.warning(
                "no local Prefect server is running: the report shows no Prefect state for "
                "flow runs %s (a later `tocsin run` starts it again)",
                runs,
            )
            return None
        api_url = found[0]
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    states: dict[str, str] = {}
    try:
        with prefect_pointed_at(settings, api_url), get_client(sync_client=True) as client:
            for flow_run_id in flow_run_ids:
                try:
                    flow_run = client.read_flow_run(UUID(flow_run_id))
                except (ObjectNotFound, ValueError):
                    _log.warning(
                        "the Prefect server at %s has no flow run %s: the report shows no "
                        "Prefect state for it",
                        api_url,
                        flow_run_id,
                    )
                    continue
                if flow_run.state is not None and flow_run.state.name:
                    states[flow_run_id] = flow_run.state.name
    except httpx.HTTPError as exc:
        _log.warning(
            "the Prefect server at %s could not be read (%s): the report shows no Prefect "
            "state for flow runs %s",
            api_url,
            str(exc) or type(exc).__name__,
            runs,
        )
        return None
    return states


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
        records, signed = journal.audit_trail(ticket)
        verification = verify_chain(ticket, records, signed, public_key)
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
        ticket,
        records,
        verification,
        flow_states=states,
        prefect_unavailable=states is None,
        generated_at=generated_at,
    )
    rendered: Any = render(report, fmt, lang)  # type: ignore[arg-type]  # checked by the CLI
    return bytes(rendered)
