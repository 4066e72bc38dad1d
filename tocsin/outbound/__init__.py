"""Outgoing HTTP requests that stay where they were sent.

Every integration that calls a service over HTTP builds its URLs and sends its
credentials through this module, so that the same guarantees hold for all of them:

1. **Values put into a URL are data.** Each is percent-encoded, so a ``/``, ``?``, ``#``,
   ``@``, ``\\``, ``..`` or ``%2e`` in an input fills one path segment or one query value
   and never moves the request elsewhere; a value that would be a whole segment of its
   own cannot be empty, ``.`` or ``..`` (``ServiceEndpoint.url`` for code,
   ``render_url_template`` for a runbook's ``url:``).
2. **The joined URL stays under the service's base URL.** Dot segments (``..``, ``%2e``,
   ``．``) are resolved the way a lenient server would, then the URL must keep the base
   URL's scheme, host and port and have its path as a prefix at a segment boundary
   (``/api/v1`` admits ``/api/v1/offices``, not ``/api/v1-admin``).
3. **A credential is bound to its endpoint.** ``ServiceEndpoint.send`` attaches it only to
   a URL that passed (2); redirects are never followed (a redirect outside the service
   is reported as such, naming the host), so a token never travels to another host.
4. **Responses are capped.** The body is read as a stream and the request is refused as
   soon as it passes ``max_response_bytes`` (10 MB by default), without reading the rest.

An integration whose settings name a ``ca_bundle`` (an internal CA, the sandbox's loopback
CA) trusts it besides the system's CAs: ``trusting(ca_bundle)`` is the TLS context its
client is given (``ServiceEndpoint(verify=...)``, httpx's ``verify=``, slack-sdk's ``ssl=``).

::

    platform = ServiceEndpoint("platform", "https://platform.example/api/v1",
                               action="http.request", credential=BearerToken(token))
    url = platform.url("/offices/{office}/disconnect", office=office_id)
    response = platform.send("POST", url, json_body={"reason": "..."}, timeout=30)
"""

from __future__ import annotations

from tocsin.outbound.endpoint import (
    DEFAULT_MAX_RESPONSE_BYTES,
    BearerToken,
    BoundedResponse,
    Credential,
    ServiceEndpoint,
    trusting,
)
from tocsin.outbound.urls import path_segment, render_url_template

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "BearerToken",
    "BoundedResponse",
    "Credential",
    "ServiceEndpoint",
    "path_segment",
    "render_url_template",
    "trusting",
]

# Shown and documented as ``tocsin.outbound.X``, whichever module defines them (as httpx does).
for _public in (
    BearerToken,
    BoundedResponse,
    Credential,
    ServiceEndpoint,
    path_segment,
    render_url_template,
    trusting,
):
    _public.__module__ = __name__
del _public
