"""HTTP integrations declared in YAML: a service's base URL, auth and named operations.

An administrator describes a site-specific HTTP API in ``integrations/<service>.yaml``
(shipped) or in the folder of the ``declared.folder`` setting; each operation becomes the
action ``<service>.<operation>``, validated, planned and audited like any other, found by
``ActionRegistry.discover``. docs/declared-integrations.md is the format's reference.

- ``model``: the declaration format (pydantic, unknown keys refused);
- ``load``: reading a file, every problem located file:line; which files there are;
- ``actions``: each operation as an ``ActionDefinition``, and a call of it (through
  ``tocsin.outbound.ServiceEndpoint``: encoded segments, kept under the base URL, the
  credential bound to it, no redirect followed, the answer capped).
"""
