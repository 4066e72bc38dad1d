"""The fake platform API keeps the contract its module docstring documents (the provider's §5.1 procedure)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tocsin.action_registry import ActionRegistry
from tocsin.actions import ActionContext
from tocsin.errors import IntegrationError
from tocsin.integrations.platform.fake import Account, Device, FakePlatform, Office
from tocsin.settings import StaticSecrets, load_settings

TOKEN = "plt-test-token"
OFFICE = Office(
    id="OF-1",
    name="Courtier Dupont",
    devices=[Device("D-1", "CERT-0001"), Device("D-2", "CERT-0002")],
    accounts=[Account("A-1", "dupont"), Account("A-2", "martin")],
    open_sessions=2,
)


@pytest.fixture(scope="module")
def platform() -> Iterator[FakePlatform]:
    with FakePlatform(token=TOKEN, offices=[OFFICE]) as fake:
        yield fake


@pytest.fixture
def client(platform: FakePlatform) -> Iterator[httpx.Client]:
    platform.reset()
    with httpx.Client(
        base_url=platform.url + "/api/v1/offices",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as session:
        yield session


def answer(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def test_office_reconnects_only_once_every_revoked_certificate_is_replaced(
    client: httpx.Client, platform: FakePlatform
) -> None:
    incident = {"reason": "office hacked", "ticket": "INC-1"}

    assert answer(client.post("/OF-1/disconnect", json=incident)) == {
        "office_id": "OF-1",
        "status": "disconnected",
        "sessions_closed": 2,
    }
    assert answer(client.post("/OF-1/certificates/revoke")) == {
        "revoked": ["CERT-0001", "CERT-0002"]
    }
    assert answer(client.post("/OF-1/credentials/revoke")) == {"accounts_reset": 2}
    refused = answer(client.post("/OF-1/reconnect"), 409)
    assert "D-1, D-2" in refused["error"]

    issued = answer(client.post("/OF-1/certificates/issue", json={"devices": ["D-1"]}))
    assert [item["device"] for item in issued["issued"]] == ["D-1"]
    assert "D-2" in answer(client.post("/OF-1/reconnect"), 409)["error"]

    answer(client.post("/OF-1/certificates/issue", json={"devices": ["D-2"]}))
    assert answer(client.post("/OF-1/reconnect")) == {"office_id": "OF-1", "status": "connected"}

    office = answer(client.get("/OF-1"))
    assert office["status"] == "connected"
    assert {d["certificate_status"] for d in office["devices"]} == {"active"}
    assert {d["certificate_serial"] for d in office["devices"]}.isdisjoint(
        {"CERT-0001", "CERT-0002"}
    )
    assert {a["credentials_status"] for a in office["accounts"]} == {"revoked"}


def test_repeated_disconnect_and_revoke_change_nothing_more(client: httpx.Client) -> None:
    incident = {"reason": "office hacked", "ticket": "INC-1"}
    client.post("/OF-1/disconnect", json=incident)
    client.post("/OF-1/certificates/revoke")
    client.post("/OF-1/credentials/revoke")

    assert answer(client.post("/OF-1/disconnect", json=incident))["sessions_closed"] == 0
    assert answer(client.post("/OF-1/certificates/revoke")) == {"revoked": []}
    assert answer(client.post("/OF-1/credentials/revoke")) == {"accounts_reset": 0}


def test_reconnect_refusal_reaches_the_runbook_as_a_non_retryable_409(
    platform: FakePlatform,
) -> None:
    platform.reset()
    context = ActionContext(
        incident="INC-1",
        step_id="reconnect",
        secrets=StaticSecrets({"platform_token": TOKEN}),
        settings=load_settings(),
    )
    http = ActionRegistry.discover().get("http.request")
    office = f"{platform.url}/api/v1/offices/OF-1"
    http.invoke(
        context,
        {
            "method": "POST",
            "url": office + "/certificates/revoke",
            "bearer_token_secret": "platform_token",
        },
    )

    with pytest.raises(IntegrationError) as caught:
        http.invoke(
            context,
            {
                "method": "POST",
                "url": office + "/reconnect",
                "bearer_token_secret": "platform_token",
            },
        )

    assert caught.value.status_code == 409
    assert not caught.value.retryable
    assert "revoked certificate" in caught.value.message


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/OF-9", None, 404),
        ("POST", "/OF-9/disconnect", {"reason": "r", "ticket": "t"}, 404),
        ("POST", "/OF-1/teleport", None, 404),
        ("DELETE", "/OF-1", None, 405),
        ("POST", "/OF-1/disconnect", {"reason": "r"}, 400),
        ("POST", "/OF-1/certificates/issue", {"devices": []}, 400),
        ("POST", "/OF-1/certificates/issue", {"devices": ["D-7"]}, 422),
    ],
)
def test_wrong_calls_answer_a_status_and_a_sentence(
    client: httpx.Client, method: str, path: str, body: Any, status: int
) -> None:
    error = answer(client.request(method, path, json=body), status)

    assert isinstance(error["error"], str) and error["error"]


def test_wrong_token_is_a_401(platform: FakePlatform) -> None:
    response = httpx.get(
        platform.url + "/api/v1/offices/OF-1", headers={"Authorization": "Bearer nope"}
    )

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in response.text


def test_injected_failures_answer_503_then_stop(
    client: httpx.Client, platform: FakePlatform
) -> None:
    platform.fail_next(2)

    statuses = [client.get("/OF-1").status_code for _ in range(3)]

    assert statuses == [503, 503, 200]
    assert platform.wait_for(lambda: len(platform.requests) == 3, timeout=1)


def test_reset_brings_back_the_seeded_offices(client: httpx.Client, platform: FakePlatform) -> None:
    client.post("/OF-1/certificates/revoke")
    assert platform.office("OF-1").devices[0].certificate_status == "revoked"

    platform.reset()

    assert platform.office("OF-1") == OFFICE
    assert platform.requests == []
