"""Sign-in logs: where, with what and how often the user (or the attacker) signed in."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, Field

from tocsin.actions import ActionContext, action
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.actions import UserRef, look_up_user

# -- sign-ins -------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _moment(moment: datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%d %H:%M UTC")


def _check_since(since: datetime | None) -> None:
    if since is not None and _utc(since) > datetime.now(UTC):
        raise ValueError(f"`since` ({since.isoformat()}) is in the future")


class SignIn(BaseModel):
    time: str
    ip: str
    country: str
    city: str
    app: str
    ok: bool
    error_code: int
    failure_reason: str = ""


class SignInSummary(BaseModel):
    """The user's interactive sign-ins in the window, newest first (at most 50 listed)."""

    user: str
    user_id: str
    since: str
    count: int
    failures: int
    successes: int
    """Sign-ins that succeeded (a leaver's after their departure date: someone got in)."""
    countries: dict[str, int]
    ips: dict[str, int]
    apps: dict[str, int]
    first: str | None
    last: str | None
    sign_ins: list[SignIn]
    note: str = "v1.0 lists interactive sign-ins only; the logs keep 30 days (7 on Entra ID Free)"


@action(
    "microsoft.recent_sign_ins",
    destructive=False,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    check=lambda parameters: _check_since(parameters.since),
    describe=lambda user, hours, since: (
        f"summarise the sign-ins of {user} "
        + (f"since {_moment(since)}" if since else f"in the last {hours} h")
        + " (countries, IP addresses, apps, failures)"
    ),
)
def recent_sign_ins(
    context: ActionContext,
    *,
    user: UserRef,
    hours: Annotated[int, Field(ge=1, le=720, description="How far back to look, in hours")] = 72,
    max_sign_ins: Annotated[
        int, Field(ge=1, le=10000, description="Read at most this many sign-ins")
    ] = 1000,
    since: Annotated[
        datetime | None,
        Field(
            description="Instead of `hours`: from this date or moment on (ISO 8601, UTC when "
            "no offset is given), like a leaver's departure date 2026-11-18"
        ),
    ] = None,
) -> SignInSummary:
    """Summarise the user's recent sign-ins (the last ``hours``, or from ``since`` on): where
    from, which apps, how many failed and how many succeeded."""
    found = look_up_user(context, "microsoft.recent_sign_ins", user)
    graph = found.graph
    start = _utc(since) if since else datetime.now(UTC) - timedelta(hours=hours)
    since_text = start.strftime("%Y-%m-%dT%H:%M:%SZ")
    raw = list(
        graph.pages(
            "/auditLogs/signIns",
            query={
                "$filter": f"userId eq '{found.id}' and createdDateTime ge {since_text}",
                "$top": min(max_sign_ins, 1000),
            },
            max_items=max_sign_ins,
            what="read the sign-in logs",
        )
    )
    sign_ins = []
    for entry in raw:
        status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
        where = entry.get("location") if isinstance(entry.get("location"), dict) else {}
        code = int((status or {}).get("errorCode") or 0)
        sign_ins.append(
            SignIn(
                time=str(entry.get("createdDateTime", "")),
                ip=str(entry.get("ipAddress", "")),
                country=str((where or {}).get("countryOrRegion") or "?"),
                city=str((where or {}).get("city") or ""),
                app=str(entry.get("appDisplayName", "")),
                ok=code == 0,
                error_code=code,
                failure_reason=str((status or {}).get("failureReason") or "") if code else "",
            )
        )
    sign_ins.sort(key=lambda s: s.time, reverse=True)
    times = [s.time for s in sign_ins]
    return SignInSummary(
        user=found.upn,
        user_id=found.id,
        since=since_text,
        count=len(sign_ins),
        failures=sum(1 for s in sign_ins if not s.ok),
        successes=sum(1 for s in sign_ins if s.ok),
        countries=dict(Counter(s.country for s in sign_ins).most_common()),
        ips=dict(Counter(s.ip for s in sign_ins).most_common()),
        apps=dict(Counter(s.app for s in sign_ins).most_common()),
        first=min(times) if times else None,
        last=max(times) if times else None,
        sign_ins=sign_ins[:50],
    )
