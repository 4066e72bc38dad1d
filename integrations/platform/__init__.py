"""The broker-software provider's platform API: its secret, its fake and its sandbox part.

Its actions (``platform.office_status``, ``disconnect_office``, ...) are declared in
``integrations/platform.yaml`` (``tocsin.declared``, docs/declared-integrations.md), base URL
in ``declared.base_urls.platform``; runbooks may also call it with ``http.request``
(``service: platform``, ``http.services.platform``). Both send the bearer token in the
secret ``platform_api_token``; the sandbox points both at the fake platform.

- ``fake``: ``FakePlatform``, the API the runbooks assume (offices, devices, accounts);
- ``sandbox``: the office seeded from the run's inputs, and the settings pointing at it;
  ``tocsin demo`` runs office-compromise on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from tocsin.integration import DeclaredSecret, DemoRun, Integration

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from tocsin.integration import CheckResult, SandboxSeed, SandboxService
    from tocsin.settings import SecretStore, Settings

TOKEN_SECRET = "platform_api_token"
SERVICE = "platform"


def _sandbox(seed: SandboxSeed) -> SandboxService:
    from tocsin.integrations.platform.sandbox import start

    return start(seed)


def _demo_runs() -> Mapping[str, DemoRun]:
    """``tocsin demo`` (office-compromise) and ``tocsin demo workstation-malware``: the office
    (and its PCs) the sandboxes seed from these inputs."""
    return {
        "office-compromise": DemoRun(
            "Broker office hacked (demo)",
            {
                "office_id": "OF-1042",
                "office_name": "Courtage Dupont",
                "devices": "PC-1,PC-2",
                # the notify sandbox's client list: the office's transparent message goes out
                "inform_clients": True,
                "clients_file": "clients.csv",
            },
        ),
        "workstation-malware": DemoRun(
            "Office PC infected, files encrypted (demo)",
            {"office_id": "OF-1042", "office_name": "Courtage Dupont", "device": "PC-2"},
        ),
    }


def _base_url(settings: Settings) -> str | None:
    from tocsin.integrations.http import integration as http

    return http.settings_of(settings).services.get(SERVICE)


def _declared_url(settings: Settings) -> str | None:
    return settings.declared.base_urls.get(SERVICE)


def _configured(settings: Settings, secrets: SecretStore) -> bool:
    return bool(_base_url(settings) or _declared_url(settings) or secrets.get(TOKEN_SECRET))


def _check(settings: Settings, secrets: SecretStore) -> Sequence[CheckResult]:
    """Its URL and token are set; whether it answers is the http integration's check (the
    platform API has no call that proves a token without touching an office)."""
    from tocsin.integration import CheckResult

    url = _base_url(settings)
    declared = _declared_url(settings)
    return [
        CheckResult("declared actions", True, f"declared.base_urls.{SERVICE} is {declared}")
        if declared
        else CheckResult(
            "declared actions",
            False,
            f"declared.base_urls.{SERVICE} is not set: the platform.* actions call the "
            "declaration's example host",
            f"set TOCSIN_DECLARED__BASE_URLS__{SERVICE.upper()} to the API's base URL "
            "(https://platform.example/api/v1)",
        ),
        CheckResult("service", True, f"http.services.{SERVICE} is {url}")
        if url
        else CheckResult(
            "service",
            False,
            f"http.services.{SERVICE} is not set: runbooks' `service: {SERVICE}` steps fail",
            f"set TOCSIN_HTTP__SERVICES__{SERVICE.upper()} to the API's base URL "
            "(https://platform.example/api/v1)",
        ),
        CheckResult("token", True, f"{TOKEN_SECRET} is set")
        if secrets.get(TOKEN_SECRET)
        else CheckResult(
            "token",
            False,
            f"the secret {TOKEN_SECRET} is not set",
            f"set TOCSIN_SECRET_{TOKEN_SECRET.upper()} to the platform API's bearer token",
        ),
    ]


integration: Integration[BaseModel] = Integration(
    name="platform",
    description="The provider's platform API (platform.* declared in integrations/platform.yaml)",
    secrets=(
        DeclaredSecret(
            TOKEN_SECRET,
            "Bearer token of the platform API, sent by the platform.* actions and named by "
            "runbooks' http.request steps (bearer_token_secret: platform_api_token)",
        ),
    ),
    sandbox=_sandbox,
    demo_runs=_demo_runs,
    configured=_configured,
    check=_check,
)
