"""Basic auth of a declared service: the header the service receives, and a refusal that
names the secret without showing it."""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.declared_support import call, declared_settings
from tocsin.errors import IntegrationError
from tocsin.sandbox import FakeService, ReceivedRequest, Reply
from tocsin.settings import Settings

PASSWORD = "s3cret-basic-password-91"
DECLARATION = """\
service: legacy
description: An older API that only knows basic auth
base_url: https://legacy.example
secrets:
  legacy_password: Password of Tocsin's account on the legacy API
auth: {type: basic, username: tocsin, password_secret: legacy_password}
defaults:
  retry: {attempts: 1}
operations:
  suspend_user:
    description: Suspend a user
    method: PUT
    path: /users/{user}/suspended
    body: {suspended: true, note: "{{ note }}"}
    destructive: true
    idempotent: true
    parameters:
      user: {type: string}
      note: {type: string, required: false, default: by Tocsin}
    error: {message: /detail}
"""


class Legacy(FakeService):
    name = "fake legacy API"

    def handle(self, request: ReceivedRequest) -> Reply:
        wanted = "Basic " + base64.b64encode(f"tocsin:{PASSWORD}".encode()).decode()
        if request.header("authorization") != wanted:
            return Reply(401, {"detail": "who are you?"})
        return Reply(200, {"user": request.path.split("/")[2], "suspended": True})


@pytest.fixture(scope="module")
def legacy() -> Iterator[Legacy]:
    with Legacy() as fake:
        yield fake


@pytest.fixture
def settings(tmp_path: Path, legacy: Legacy) -> Settings:
    legacy.reset()
    (tmp_path / "legacy.yaml").write_text(textwrap.dedent(DECLARATION), encoding="utf-8")
    return declared_settings({"legacy": legacy.url}, folder=tmp_path)


def test_basic_auth_reaches_the_service_with_the_body_rendered(
    settings: Settings, legacy: Legacy
) -> None:
    outputs = call("legacy.suspend_user", settings, {"legacy_password": PASSWORD}, user="u1")
    assert outputs == {"status_code": 200}
    [seen] = legacy.requests
    assert (seen.method, seen.path) == ("PUT", "/users/u1/suspended")
    assert seen.json() == {"suspended": True, "note": "by Tocsin"}


def test_a_wrong_password_is_refused_with_the_service_s_words_and_not_shown(
    settings: Settings,
) -> None:
    wrong = "not-the-password-77"
    with pytest.raises(IntegrationError) as caught:
        call("legacy.suspend_user", settings, {"legacy_password": wrong}, user="u1")
    assert caught.value.message.endswith("(expected a 2xx status): who are you?")
    assert "TOCSIN_SECRET_LEGACY_PASSWORD" in caught.value.hint
    assert wrong not in f"{caught.value.message} {caught.value.hint}"
