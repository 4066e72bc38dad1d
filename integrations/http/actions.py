"""A plain HTTP call, for services without an integration of their own (the provider's platform API).

Where a call may go is decided by ``tocsin.outbound``: the engine renders ``url`` with each
``{{ }}`` value percent-encoded, and ``ServiceEndpoint`` keeps the call (and the token) under
the service's base URL, does not follow redirects and caps the response.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, Field
from pydantic_core import PydanticCustomError

from tocsin.actions import WRITTEN_AS_IS, ActionContext, SecretName, UrlTemplate, action
from tocsin.errors import ActionError, ConfigurationError, IntegrationError
from tocsin.integrations.http import integration
from tocsin.outbound import (
    DEFAULT_MAX_RESPONSE_BYTES,
    BearerToken,
    BoundedResponse,
    ServiceEndpoint,
    trusting,
)
from tocsin.retry_after import retry_after_of

ACTION = "http.request"
BODY_TEXT_LIMIT = 64 * 1024
"""A body that is not JSON is kept as text, cut to this many bytes."""


def _http_url(value: str) -> str:
    if "#" in value or "\\" in value or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value):
        # A value templated in is encoded, so these can only be written in the runbook.
        raise PydanticCustomError(
            "http_url_characters",
            "must not contain a #fragment (never sent), a backslash, a space or a control "
            "character; give query parameters under `query:` and percent-encode the rest",
        )
    if value.startswith("/") and not value.startswith("//"):
        return value  # a path under a configured service's base URL; see _url_fits_service
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError when out of range
    except ValueError as exc:
        raise PydanticCustomError(
            "http_url", "is not a valid URL: {reason}", {"reason": str(exc)}
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PydanticCustomError(
            "http_url",
            "must be an http:// or https:// URL with a host, like "
            "https://platform.example/api/v1/offices/OF-1 (got scheme {scheme!r})",
            {"scheme": parts.scheme},
        )
    if parts.username is not None or parts.password is not None:
        # The URL is shown in the plan and the audit trail; credentials there would leak.
        raise PydanticCustomError(
            "http_url_credentials",
            "must not carry credentials (user:password@); name a secret in bearer_token_secret",
        )
    return value


def _url_fits_service(parameters: Any) -> None:
    """A path needs ``service:``; with ``service:``, ``url`` is a path."""
    is_path = parameters.url.startswith("/")
    if parameters.service is None and is_path:
        raise ValueError(
            f"url {parameters.url!r} is a path: name the service it belongs to with `service:` "
            "(configured in the settings), or give a full https:// URL"
        )
    if parameters.service is not None and not is_path:
        raise ValueError(
            f"with `service: {parameters.service}`, url is a path under the service's base URL, "
            f"like /offices/OF-1 (not {parameters.url!r})"
        )


def _describe(method: str, url: str, service: str | None) -> str:
    return f"{method} {url} on the {service} service" if service else f"{method} {url}"


class HttpResponse(BaseModel):
    """What the service answered."""

    status_code: int
    body: Any
    elapsed_ms: int


@action(
    ACTION,
    destructive=True,
    idempotent=False,
    describe=_describe,
    check=_url_fits_service,
    read_only_when=lambda method: method == "GET",
)
def request(
    context: ActionContext,
    *,
    method: Annotated[
        Literal["GET", "POST", "PUT", "PATCH", "DELETE"], Field(description="HTTP method")
    ] = "GET",
    url: Annotated[
        UrlTemplate,
        AfterValidator(_http_url),
        Field(
            description="Full http:// or https:// URL without credentials, "
            "or a path starting with / when `service` is given; each {{ }} value in it is "
            "percent-encoded, and the URL must stay under the service's base URL"
        ),
    ],
    service: Annotated[
        str | None,
        WRITTEN_AS_IS,
        Field(
            pattern=r"^[a-z][a-z0-9_]*$",
            description="Name of a configured service (settings `http.services`); url is then a path",
        ),
    ] = None,
    headers: Annotated[
        dict[str, str], Field(description="Extra request headers (no secrets: they are audited)")
    ] = {},  # noqa: B006 -- pydantic copies field defaults
    query: Annotated[
        dict[str, str | int], Field(description="Query-string parameters added to the URL")
    ] = {},  # noqa: B006
    json_body: Annotated[Any, Field(description="Body sent as JSON; none when null")] = None,
    expect_status: Annotated[
        list[Annotated[int, Field(ge=100, le=599)]],
        Field(description="Statuses that count as success; any 2xx when empty"),
    ] = [],  # noqa: B006
    bearer_token_secret: Annotated[
        SecretName | None,
        WRITTEN_AS_IS,
        Field(description="Name of the secret holding a token sent as Authorization: Bearer"),
    ] = None,
    timeout_seconds: Annotated[
        float | None,
        Field(
            gt=0,
            description="Seconds to wait for the service; default: settings.http_timeout_seconds",
        ),
    ] = None,
    max_response_bytes: Annotated[
        int,
        Field(gt=0, description="Largest response body read; a larger one fails the step"),
    ] = DEFAULT_MAX_RESPONSE_BYTES,
) -> HttpResponse:
    """Send one HTTP request and return the status and the (JSON or text) body."""
    endpoint = _endpoint(context, url, service, bearer_token_secret, max_response_bytes)
    sent_headers = dict(headers)
    if bearer_token_secret is not None and any(
        name.lower() == "authorization" for name in sent_headers
    ):
        raise ActionError(
            ACTION,
            "both headers.Authorization and bearer_token_secret are given",
            "keep bearer_token_secret and remove the Authorization header",
        )
    timeout = timeout_seconds or float(context.settings.http_timeout_seconds)

    started = time.monotonic()
    response = endpoint.send(
        method, url, headers=sent_headers, query=query, json_body=json_body, timeout=timeout
    )
    elapsed_ms = round((time.monotonic() - started) * 1000)
    context.logger.info(
        "[%s %s] %s %s -> %s in %d ms",
        context.incident,
        context.step_id,
        method,
        response.url,
        response.status_code,
        elapsed_ms,
    )

    status = response.status_code
    expected = status in expect_status if expect_status else 200 <= status < 300
    if not expected:
        raise _unexpected_status(endpoint, response, method, expect_status, bearer_token_secret)
    return HttpResponse(status_code=status, body=_body(response), elapsed_ms=elapsed_ms)


def _endpoint(
    context: ActionContext,
    url: str,
    service: str | None,
    secret_name: str | None,
    max_response_bytes: int,
) -> ServiceEndpoint:
    """The endpoint a call goes to: the configured service's base URL, or the URL's own origin.

    Either way the token is bound to it: ``ServiceEndpoint`` refuses any URL outside it.
    """
    settings = integration.settings_of(context.settings)
    if service is not None:
        base_url = settings.services.get(service)
        if not base_url:
            raise ConfigurationError(
                f"service {service!r} is not configured",
                f"set TOCSIN_HTTP__SERVICES__{service.upper()}=https://... (its base URL), "
                f'or `{service} = "https://..."` under [http.services] in the settings file',
            )
        name = service
    else:
        parts = urlsplit(url)
        base_url = f"{parts.scheme}://{parts.netloc}"
        name = parts.hostname or url
    credential = BearerToken(context.secret(secret_name)) if secret_name is not None else None
    return ServiceEndpoint(
        name,
        base_url,
        action=ACTION,
        credential=credential,
        max_response_bytes=max_response_bytes,
        limit_hint="set max_response_bytes under the step's `with:`",
        verify=trusting(settings.ca_bundle),
    )


def _body(response: BoundedResponse) -> Any:
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        if not response.content:
            return None
        try:
            return json.loads(response.content)
        except ValueError:
            pass  # announced as JSON but is not: keep it as text
    return response.content[:BODY_TEXT_LIMIT].decode(response.encoding, errors="replace")


def _unexpected_status(
    endpoint: ServiceEndpoint,
    response: BoundedResponse,
    method: str,
    expect_status: list[int],
    secret_name: str | None,
) -> IntegrationError:
    status = response.status_code
    url = response.url
    wanted = ", ".join(str(code) for code in expect_status) if expect_status else "a 2xx status"
    excerpt = endpoint.hidden(" ".join(response.text[:300].split()))
    message = f"answered {status} {response.reason_phrase} to {method} {url} (expected {wanted})"
    if excerpt:
        message += f": {excerpt}"
    retryable = status == 429 or status >= 500
    if status in (401, 403):
        if secret_name is not None:
            hint = (
                f"check the secret {secret_name!r} (TOCSIN_SECRET_{secret_name.upper()}): "
                f"it must hold a valid token allowed to {method} this URL"
            )
        else:
            hint = "the service wants credentials: set bearer_token_secret to the name of a secret holding its token"
    elif status == 404:
        hint = "check the URL and the identifiers in it"
    elif status == 429:
        hint = "the service is rate limiting; retry the step later"
    elif status >= 500:
        hint = "the service failed; retry the step later"
    elif 300 <= status < 400:
        location = response.headers.get("location", "another URL")
        elsewhere = endpoint.redirect_leaves(response)
        if elsewhere is not None:
            message += (
                f"; it redirects to {elsewhere}, outside the {endpoint.service} service, "
                "so the redirect was not followed and nothing (no token) was sent there"
            )
            hint = "call that host in a step of its own if it is meant to be called"
        else:
            hint = (
                f"the service redirects to {location} (redirects are not followed); call that URL"
            )
    elif 200 <= status < 300:
        hint = "the call went through but answered another status; check expect_status"
    else:
        hint = "the service refused the request; check the parameters against its API"
    return IntegrationError(
        ACTION,
        endpoint.service,
        message,
        hint,
        status_code=status,
        retryable=retryable,
        unapplied=status in (429, 503),  # refused before acting, as both statuses mean
        retry_after=retry_after_of(response.headers) if status in (429, 503) else None,
    )
