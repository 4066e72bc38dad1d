"""Each declared operation as an ``ActionDefinition``, and what a call of it does.

A call renders the operation's path (each ``{name}`` one encoded segment, by
``ServiceEndpoint.url``), query and body (sandboxed templates over the checked parameters),
sends it through a ``ServiceEndpoint`` bound to the service's base URL (the declared one or
the ``declared.base_urls`` setting) with the service's credential, tries again on the
declared statuses, and returns the outputs read from the JSON answer by their pointers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, create_model

from tocsin.actions import ActionContext, ActionDefinition
from tocsin.declared.load import LoadedDeclaration
from tocsin.declared.model import (
    MAX_BACKOFF_SECONDS,
    BasicAuth,
    BearerAuth,
    Declaration,
    HmacAuth,
    MtlsAuth,
    Operation,
    Retry,
)
from tocsin.errors import ConfigurationError, IntegrationError
from tocsin.outbound import BearerToken, BoundedResponse, Credential, ServiceEndpoint, trusting
from tocsin.retry_after import retry_after_of
from tocsin.templating import render_string, render_value

NOT_PROCESSED = frozenset({429, 503})
"""Statuses after which a request that is not idempotent may be sent again."""
STATUS_OUTPUT = "status_code"
"""Every declared operation returns the answer's status besides its declared outputs."""


def definitions_of(loaded: LoadedDeclaration) -> list[ActionDefinition]:
    """The actions of one declaration, ``<service>.<operation>``, in file order."""
    declaration = loaded.declaration
    found = []
    for name, operation in declaration.operations.items():
        action = f"{declaration.service}.{name}"
        call = _Call(declaration, operation, action)
        runner = _runner(call, loaded.file)
        auth_secret = declaration.auth_secret()
        found.append(
            ActionDefinition(
                name=action,
                description=operation.description,
                destructive=operation.destructive,
                idempotent=operation.idempotent,
                function=runner,
                parameters=_parameter_model(action, operation),
                result=_result_model(action, operation),
                secrets=(auth_secret[1],) if auth_secret else (),
                describe=_describer(operation.describe) if operation.describe else None,
                needs_approval=operation.needs_approval,
            )
        )
    return found


def _runner(call: _Call, file: str) -> Callable[..., dict[str, Any]]:
    def run(context: ActionContext, **values: Any) -> dict[str, Any]:
        return call.run(context, values)

    run.__module__ = file  # `tocsin actions` says where it comes from: the declaration's file
    run.__qualname__ = run.__name__ = call.action
    return run


def _describer(template: str) -> Callable[..., str]:
    def describe(**values: Any) -> str:
        return str(render_string(template, values))

    return describe


# -- parameters and outputs -------------------------------------------------------------------


def _model_name(action: str, suffix: str) -> str:
    return "".join(part.title() for part in action.replace("_", ".").split(".")) + suffix


def _parameter_model(action: str, operation: Operation) -> type[BaseModel]:
    fields: dict[str, Any] = {
        name: (parameter.annotation(), ... if parameter.required else parameter.default)
        for name, parameter in operation.parameters.items()
    }
    return create_model(
        _model_name(action, "Parameters"), __config__=ConfigDict(extra="forbid"), **fields
    )


def _result_model(action: str, operation: Operation) -> type[BaseModel]:
    fields: dict[str, Any] = {name: (Any, None) for name in operation.outputs}
    fields.setdefault(STATUS_OUTPUT, (int, ...))
    return create_model(_model_name(action, "Outputs"), **fields)


def json_pointer(document: Any, pointer: str) -> Any:
    """The value at an RFC 6901 pointer (``/rules/0/id``); None when it is not there."""
    if pointer == "":
        return document
    current = document
    for raw in pointer[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(current, dict):
            if part not in current:
                return None
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


# -- credentials ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BasicCredential:
    """``Authorization: Basic`` with a declared user name and the password from a secret."""

    username: str
    secret: str = field(repr=False)

    def headers(self) -> Mapping[str, str]:
        pair = f"{self.username}:{self.secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}


@dataclass(frozen=True)
class HmacCredential:
    """Signs each request: the declared parts, joined by newlines, keyed with the secret."""

    auth: HmacAuth
    secret: str = field(repr=False)

    def headers(self) -> Mapping[str, str]:
        return {}

    def signed_headers(self, method: str, url: httpx.URL, body: bytes) -> Mapping[str, str]:
        timestamp = str(int(time.time()))
        signature = sign(
            self.auth, self.secret, method, url.raw_path.decode("ascii"), timestamp, body
        )
        return {self.auth.timestamp_header: timestamp, self.auth.header: signature}


def sign(auth: HmacAuth, key: str, method: str, path: str, timestamp: str, body: bytes) -> str:
    """The hex signature of a request as ``HmacAuth`` declares it (fakes verify with this too)."""
    parts = {
        "method": method.upper(),
        "path": path,
        "timestamp": timestamp,
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }
    text = "\n".join(parts[name] for name in auth.signed)
    return hmac.new(key.encode(), text.encode(), auth.algorithm).hexdigest()


@dataclass(frozen=True)
class ClientCertificate:
    """The PEM certificate and key presented in the TLS handshake; kept only to hide it."""

    secret: str = field(repr=False)

    def headers(self) -> Mapping[str, str]:
        return {}


def _with_client_certificate(
    verify: ssl.SSLContext | None, pem: str, service: str
) -> ssl.SSLContext:
    context = verify or ssl.create_default_context()
    # ssl reads a certificate chain from a file only: a private one, removed at once.
    descriptor, name = tempfile.mkstemp(suffix=".pem")
    try:
        with os.fdopen(descriptor, "w") as stream:
            stream.write(pem)
        context.load_cert_chain(name)
    except (OSError, ssl.SSLError, ValueError):
        raise ConfigurationError(
            f"the client certificate of the {service} service cannot be read",
            "its secret must hold the PEM certificate followed by its unencrypted PEM key",
        ) from None
    finally:
        os.unlink(name)
    return context


# -- a call ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    declaration: Declaration
    operation: Operation
    action: str

    @property
    def service(self) -> str:
        return self.declaration.service

    def run(self, context: ActionContext, values: Mapping[str, Any]) -> dict[str, Any]:
        operation = self.operation
        endpoint = self._endpoint(context)
        url = endpoint.url(operation.path, **values)
        query = {key: str(render_string(text, values)) for key, text in operation.query.items()}
        body = render_value(operation.body, dict(values)) if operation.body is not None else None
        timeout = operation.timeout_seconds or self.declaration.defaults.timeout_seconds
        retry = operation.retry or self.declaration.defaults.retry
        response = self._send(context, endpoint, url, query, body, timeout, retry)
        document = _json(response)
        expected = operation.expect_status
        ok = response.status_code in expected if expected else 200 <= response.status_code < 300
        if not ok:
            raise self._error(endpoint, response, document)
        # A service echoing the credential back must not put it into the run's outputs.
        outputs = {
            name: _hidden(endpoint, json_pointer(document, pointer))
            for name, pointer in operation.outputs.items()
        }
        outputs.setdefault(STATUS_OUTPUT, response.status_code)
        return outputs

    def _endpoint(self, context: ActionContext) -> ServiceEndpoint:
        settings = context.settings.declared
        base_url = settings.base_urls.get(self.service) or self.declaration.base_url
        verify = trusting(settings.ca_bundle)
        auth = self.declaration.auth
        credential: Credential | None = None
        if isinstance(auth, BearerAuth):
            credential = BearerToken(context.secret(auth.token_secret))
        elif isinstance(auth, BasicAuth):
            credential = BasicCredential(auth.username, context.secret(auth.password_secret))
        elif isinstance(auth, HmacAuth):
            credential = HmacCredential(auth, context.secret(auth.key_secret))
        elif isinstance(auth, MtlsAuth):
            pem = context.secret(auth.certificate_secret)
            credential = ClientCertificate(pem)
            verify = _with_client_certificate(verify, pem, self.service)
        return ServiceEndpoint(
            self.service,
            base_url,
            action=self.action,
            credential=credential,
            max_response_bytes=self.declaration.defaults.max_response_bytes,
            limit_hint=f"raise defaults.max_response_bytes in the {self.service} declaration",
            verify=verify,
        )

    def _send(
        self,
        context: ActionContext,
        endpoint: ServiceEndpoint,
        url: str,
        query: Mapping[str, str],
        body: Any,
        timeout: float,
        retry: Retry,
    ) -> BoundedResponse:
        delay = retry.backoff_seconds
        for attempt in range(1, retry.attempts + 1):
            last = attempt == retry.attempts
            try:
                response = endpoint.send(
                    self.operation.method, url, query=query, json_body=body, timeout=timeout
                )
            except IntegrationError as exc:
                # A request that may have arrived is sent again only when that is harmless.
                if last or not exc.retryable or not self.operation.idempotent:
                    raise
                time.sleep(min(delay, MAX_BACKOFF_SECONDS))
                delay *= 2
                continue
            context.logger.info(
                "[%s %s] %s %s -> %s (try %d of %d)",
                context.incident,
                context.step_id,
                self.operation.method,
                response.url,
                response.status_code,
                attempt,
                retry.attempts,
            )
            if last or not self._may_retry(response.status_code, retry):
                return response
            wait = _retry_after(response)
            if wait is not None and wait > MAX_BACKOFF_SECONDS:
                return response  # the service asks for longer than a step waits: say so
            time.sleep(min(wait if wait is not None else delay, MAX_BACKOFF_SECONDS))
            delay *= 2
        raise AssertionError("unreachable: the last try returns or raises")

    def _may_retry(self, status: int, retry: Retry) -> bool:
        """Whether to send again: a declared status; for an operation that is not idempotent,
        only those saying the request was not processed (429, 503), never a 502 or 504
        after which it may have been."""
        if status not in retry.on_status:
            return False
        return self.operation.idempotent or status in NOT_PROCESSED

    def _error(
        self, endpoint: ServiceEndpoint, response: BoundedResponse, document: Any
    ) -> IntegrationError:
        status = response.status_code
        pointer = (self.operation.error or self.declaration.error).message
        said = json_pointer(document, pointer) if document is not None else None
        if said is None:
            said = " ".join(response.text[:300].split())
        said = endpoint.hidden(str(said))[:300]
        wanted = ", ".join(map(str, self.operation.expect_status)) or "a 2xx status"
        message = f"answered {status} {response.reason_phrase} (expected {wanted})"
        if said:
            message += f": {said}"
        retryable = status == 429 or status >= 500
        secret = self.declaration.auth_secret()
        if status in (401, 403):
            hint = (
                f"check the secret {secret[1]} (TOCSIN_SECRET_{secret[1].upper()}): the "
                f"{self.service} service refused it for {self.action}"
                if secret
                else f"the {self.service} service wants credentials: declare its auth"
            )
        elif status == 404:
            hint = "check the identifiers given to the step; the service knows no such thing"
        elif status == 429:
            wait = _retry_after(response)
            hint = "the service is rate limiting; run the step again later" + (
                f" (it asks for {wait:g} s)" if wait is not None else ""
            )
        elif status >= 500:
            hint = "the service failed; the step can be run again"
        elif 300 <= status < 400:
            leaves = endpoint.redirect_leaves(response)
            hint = (
                f"it redirects to {leaves}, outside the service: not followed, nothing sent there"
                if leaves
                else "it redirects (not followed): check the declaration's base_url and path"
            )
        else:
            hint = f"the {self.service} service refused the request: see its message"
        return IntegrationError(
            self.action,
            self.service,
            message,
            hint,
            status_code=status,
            retryable=retryable,
            unapplied=status in NOT_PROCESSED,  # the service did not act on it: safe again
            retry_after=_retry_after(response) if status in NOT_PROCESSED else None,
        )


def _hidden(endpoint: ServiceEndpoint, value: Any) -> Any:
    if isinstance(value, str):
        return endpoint.hidden(value)
    if isinstance(value, list):
        return [_hidden(endpoint, item) for item in value]
    if isinstance(value, dict):
        return {key: _hidden(endpoint, item) for key, item in value.items()}
    return value


def _json(response: BoundedResponse) -> Any:
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _retry_after(response: BoundedResponse) -> float | None:
    return retry_after_of(response.headers)
