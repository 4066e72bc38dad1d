"""The sandbox's generic parts: the base of every fake service, the assembly, the loopback CA.

Each fake is a real HTTP server on ``127.0.0.1`` at an ephemeral port, run in a daemon
thread (standard library only), and lives in its integration's package::

    from tocsin.integrations.slack.fake import FakeSlack

    with FakeSlack() as slack:
        settings = load_settings(slack={"api_url": slack.url + "/api/"})
        ...
        assert slack.messages[0].text == "Office OF-1 disconnected"

- ``FakeService`` (``fake_service``): the base; records requests, injects failures
  (``fail_next``, ``stall_next``), serves https when started with a TLS context;
- ``Sandbox`` (``assembly``): starts the fake of every installed integration and returns
  the settings and secrets pointing at them;
- ``LoopbackCA`` (``tls``): the CA and loopback certificate made at run time.
"""

from __future__ import annotations

from tocsin.sandbox.fake_service import FakeService, ReceivedRequest, Reply

__all__ = ["FakeService", "ReceivedRequest", "Reply"]
