"""The toy's check, as a third-party integration writes one: the token works (``GET /whoami``,
which rings nothing)."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from tests.toy_integration import TOKEN_SECRET, integration
from tocsin.integration import CheckResult
from tocsin.outbound import trusting
from tocsin.settings import SecretStore, Settings


def check(settings: Settings, secrets: SecretStore) -> Sequence[CheckResult]:
    toy = integration.settings_of(settings)
    token = secrets.get(TOKEN_SECRET)
    if not token:
        return [
            CheckResult("token", False, f"{TOKEN_SECRET} is not set", "set TOCSIN_SECRET_TOY_TOKEN")
        ]
    verify = trusting(toy.ca_bundle)
    try:
        answer = httpx.get(
            f"{toy.url}/whoami",
            headers={"Authorization": f"Bearer {token}"},
            verify=verify if verify is not None else True,
            timeout=10,
        )
    except httpx.HTTPError as exc:
        return [CheckResult("token", False, f"the bell at {toy.url} cannot be reached: {exc}")]
    if answer.status_code != 200:
        return [
            CheckResult(
                "token", False, f"the bell refused the token ({answer.status_code})", "ask the bell"
            )
        ]
    return [
        CheckResult("token", True, f"the bell at {toy.url} knows us as {answer.json()['caller']}")
    ]
