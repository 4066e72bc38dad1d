"""What a declaration file says: one HTTP service, its auth and its named operations.

Every model forbids unknown keys, so a misspelt safety setting (``destrutive:``) is an
error located in the file, never a silently ignored key. Checks that need the whole
declaration (a template naming an undeclared parameter, a secret the auth uses but the
file does not declare) are in ``tocsin.declared.load``, which locates them too.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

NAME = r"^[a-z][a-z0-9_]*$"
Name = Annotated[str, Field(pattern=NAME)]

MAX_ATTEMPTS = 5
MAX_BACKOFF_SECONDS = 30.0


def _cidr(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not an address range (CIDR like 203.0.113.0/24): {exc}"
        ) from None
    return str(network)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BearerAuth(_Strict):
    """``Authorization: Bearer <secret>``."""

    type: Literal["bearer"]
    token_secret: Name


class BasicAuth(_Strict):
    """``Authorization: Basic``, a user name written here and the password in a secret."""

    type: Literal["basic"]
    username: str = Field(min_length=1, pattern=r"^[^:\r\n]+$")
    password_secret: Name


SignedPart = Literal["method", "path", "timestamp", "body_sha256"]


def _every_part() -> list[SignedPart]:
    return ["method", "path", "timestamp", "body_sha256"]


class HmacAuth(_Strict):
    """A keyed signature of the request in a header, with the time it was signed."""

    type: Literal["hmac"]
    key_secret: Name
    header: str = Field("X-Signature", pattern=r"^[A-Za-z0-9-]+$")
    algorithm: Literal["sha256", "sha512"] = "sha256"
    signed: list[SignedPart] = Field(default_factory=_every_part, min_length=1)
    """Joined with newlines in this order, then signed; ``path`` includes the query."""
    timestamp_header: str = Field("X-Timestamp", pattern=r"^[A-Za-z0-9-]+$")


class MtlsAuth(_Strict):
    """A client certificate presented in the TLS handshake (PEM certificate and key in one secret)."""

    type: Literal["mtls"]
    certificate_secret: Name


Auth = Annotated[BearerAuth | BasicAuth | HmacAuth | MtlsAuth, Field(discriminator="type")]


class Retry(_Strict):
    """Which answers are tried again, and how long to wait between tries."""

    attempts: int = Field(1, ge=1, le=MAX_ATTEMPTS)
    backoff_seconds: float = Field(0.5, ge=0, le=MAX_BACKOFF_SECONDS)
    """Doubled after each try, never past ``MAX_BACKOFF_SECONDS``; a 429's Retry-After wins."""
    on_status: list[Annotated[int, Field(ge=400, le=599)]] = Field(
        default_factory=lambda: [429, 502, 503, 504]
    )


class Defaults(_Strict):
    """What every operation has unless it says otherwise."""

    timeout_seconds: float = Field(30.0, gt=0, le=300)
    retry: Retry = Field(default_factory=Retry)
    max_response_bytes: int = Field(1024 * 1024, gt=0, le=10 * 1024 * 1024)


class ErrorShape(_Strict):
    """Where an error answer's sentence is: a JSON pointer into its body (``/error``)."""

    message: str = Field("/error", pattern=r"^(/.*)?$")


ParameterType = Literal["string", "integer", "boolean", "list", "cidr", "enum"]


class Parameter(_Strict):
    """A typed value a runbook step gives under ``with:``."""

    type: ParameterType
    description: str = ""
    required: bool = True
    default: Any = None
    pattern: str | None = None
    """For ``string`` (and each item of a ``list``): a regular expression the value matches."""
    values: list[str] | None = None
    """For ``enum``: the values allowed."""
    max_length: int = Field(256, gt=0, le=4096)

    def annotation(self) -> Any:
        """The type a value of this parameter is checked against (pydantic)."""
        info = Field(description=self.description or None)
        text = Annotated[str, Field(min_length=1, max_length=self.max_length, pattern=self.pattern)]
        if self.type == "string":
            return Annotated[text, info]
        if self.type == "integer":
            return Annotated[int, Field(strict=True), info]
        if self.type == "boolean":
            return Annotated[bool, Field(strict=True), info]
        if self.type == "list":
            return Annotated[list[text], Field(max_length=1000), info]
        if self.type == "cidr":
            return Annotated[str, Field(max_length=64), AfterValidator(_cidr), info]
        return Annotated[Literal[tuple(self.values or ())], info]


class Operation(_Strict):
    """One call of the service, which becomes the action ``<service>.<operation>``."""

    description: str = Field(min_length=1)
    describe: str | None = None
    """The plan's sentence, a template over the parameters."""
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str = Field(min_length=1)
    """Under the base URL; ``{name}`` is a parameter, encoded as one whole path segment."""
    query: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    """Sent as JSON; its strings may be templates over the parameters."""
    parameters: dict[Name, Parameter] = Field(default_factory=dict)
    destructive: bool
    idempotent: bool = False
    needs_approval: bool = False
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(default_factory=list)
    """Statuses that count as success; any 2xx when empty."""
    outputs: dict[Name, str] = Field(default_factory=dict)
    """Output name: JSON pointer into the answer (``/status``); null when absent."""
    error: ErrorShape | None = None
    retry: Retry | None = None
    timeout_seconds: float | None = Field(None, gt=0, le=300)


class Declaration(_Strict):
    """One service, as an administrator declares it in ``integrations/<service>.yaml``."""

    service: Name
    description: str = Field(min_length=1)
    base_url: str = Field(min_length=1)
    secrets: dict[Name, str] = Field(default_factory=dict)
    """Secret name: what it holds (set as ``TOCSIN_SECRET_<NAME>``)."""
    auth: Auth | None = None
    defaults: Defaults = Field(default_factory=Defaults)
    error: ErrorShape = Field(default_factory=ErrorShape)
    operations: dict[Name, Operation] = Field(min_length=1)

    def auth_secret(self) -> tuple[str, str] | None:
        """(key of the auth block naming it, secret name) of the auth's secret."""
        auth = self.auth
        if isinstance(auth, BearerAuth):
            return "token_secret", auth.token_secret
        if isinstance(auth, BasicAuth):
            return "password_secret", auth.password_secret
        if isinstance(auth, HmacAuth):
            return "key_secret", auth.key_secret
        if isinstance(auth, MtlsAuth):
            return "certificate_secret", auth.certificate_secret
        return None
