"""The action seam: typed functions, parameter models, and discovery through entry points."""

from __future__ import annotations

import json
import logging
import os
import textwrap
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from tests.cli_runner import ROOT, run_tocsin
from tocsin.action_registry import ActionRegistry, definitions_in
from tocsin.actions import ActionContext, action
from tocsin.errors import ActionError, ConfigurationError, UnknownActionError
from tocsin.settings import StaticSecrets, load_settings


class Isolated(BaseModel):
    device: str
    isolated: bool


@action(
    "test.isolate_device",
    destructive=True,
    idempotent=True,
    secrets=("defender_token",),
    describe=lambda device, comment: f"isolate {device} from the network",
)
def isolate_device(
    context: ActionContext,
    *,
    device: Annotated[str, Field(description="Device name")],
    comment: Annotated[str, Field(description="Why")] = "incident",
) -> Isolated:
    """Isolate a device.

    Longer text that the one-line description leaves out.
    """
    context.secret("defender_token")
    return Isolated(device=device, isolated=True)


def _context(**secrets: str) -> ActionContext:
    return ActionContext(
        incident="INC-1",
        step_id="isolate",
        secrets=StaticSecrets(secrets),
        settings=load_settings(),
        logger=logging.getLogger("test"),
    )


def test_a_decorated_function_describes_itself() -> None:
    definition = ActionRegistry([isolate_device.__tocsin_action__]).get("test.isolate_device")  # type: ignore[attr-defined]
    assert definition.description == "Isolate a device."
    assert definition.destructive and definition.idempotent
    assert set(definition.parameters.model_fields) == {"device", "comment"}
    assert definition.output_names == {"device", "isolated"}
    checked = definition.check_parameters({"device": "PC-7"})
    assert definition.describe_call(checked) == "isolate PC-7 from the network"


def test_invoke_checks_parameters_and_returns_plain_outputs() -> None:
    definition = ActionRegistry.from_modules([__name__]).get("test.isolate_device")
    assert definition.invoke(_context(defender_token="t"), {"device": "PC-7"}) == {
        "device": "PC-7",
        "isolated": True,
    }
    with pytest.raises(ActionError, match="wrong parameters: device: Field required"):
        definition.invoke(_context(defender_token="t"), {})
    with pytest.raises(ActionError, match="devcie: Extra inputs are not permitted"):
        definition.invoke(_context(defender_token="t"), {"device": "x", "devcie": "y"})


def test_a_missing_secret_names_the_variable_to_set() -> None:
    definition = ActionRegistry.from_modules([__name__]).get("test.isolate_device")
    with pytest.raises(ConfigurationError) as caught:
        definition.invoke(_context(), {"device": "PC-7"})
    assert caught.value.hint == "set the environment variable TOCSIN_SECRET_DEFENDER_TOKEN"


def test_the_decorator_leaves_no_global_registration_behind() -> None:
    assert "test.isolate_device" not in ActionRegistry.discover()


def test_builtin_actions_are_discovered() -> None:
    names = {definition.name for definition in ActionRegistry.discover()}
    assert {"log", "http.request", "slack.post_message"} <= names


def test_unknown_action_suggests_the_closest_name() -> None:
    with pytest.raises(UnknownActionError) as caught:
        ActionRegistry.discover().get("slack.post_mesage")
    assert caught.value.hint == "did you mean 'slack.post_message'?"


def test_two_packages_defining_the_same_action_is_a_configuration_error() -> None:
    definition: Any = isolate_device.__tocsin_action__  # type: ignore[attr-defined]
    clone = type(definition)(**{**definition.__dict__, "function": lambda context: None})
    with pytest.raises(
        ConfigurationError, match="two packages define the action 'test.isolate_device'"
    ):
        ActionRegistry([definition, clone])


def test_an_action_must_take_context_first_and_keyword_only_parameters() -> None:
    with pytest.raises(TypeError, match="first parameter must be `context"):

        @action("bad.one", destructive=False)
        def bad_one(device: str) -> None: ...

    with pytest.raises(TypeError, match="must be keyword-only"):

        @action("bad.two", destructive=False)
        def bad_two(context: ActionContext, device: str) -> None: ...


def _install_plugin(root: Path, module_body: str) -> None:
    package = root / "acme_tocsin"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(module_body)
        + "\nfrom tocsin.integration import Integration\n"
        + "integration = Integration(name='acme', description='ACME', action_modules=('acme_tocsin',))\n"
    )
    dist = root / "acme_tocsin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-tocsin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[tocsin.integrations]\nacme = acme_tocsin:integration\n"
    )


def test_a_third_party_package_adds_actions_through_its_entry_point(tmp_path: Path) -> None:
    _install_plugin(
        tmp_path,
        """
        from typing import Annotated
        from pydantic import Field
        from tocsin.actions import ActionContext, action

        @action("acme.ticket_note", destructive=False, describe=lambda text: f"note: {text}")
        def ticket_note(context: ActionContext, *, text: Annotated[str, Field(description="Note")]) -> dict:
            \"\"\"Add a note to the ACME ticket.\"\"\"
            return {"noted": text}
        """,
    )
    # The checkout stays on the path: the session's settings may name the tests' own actions.
    path = os.pathsep.join((str(tmp_path), str(ROOT)))
    result = run_tocsin("actions", "--json", env={"PYTHONPATH": path})
    assert result.returncode == 0, result.stderr
    actions = {item["name"]: item for item in json.loads(result.stdout)}
    assert actions["acme.ticket_note"]["description"] == "Add a note to the ACME ticket."
    assert actions["acme.ticket_note"]["parameters"][0]["name"] == "text"
    assert actions["acme.ticket_note"]["module"] == "acme_tocsin"


def test_a_broken_action_package_is_named_without_a_traceback(tmp_path: Path) -> None:
    _install_plugin(tmp_path, "raise RuntimeError('acme is misconfigured')\n")
    result = run_tocsin("actions", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 3
    assert "cannot load action package 'acme_tocsin' (entry point 'acme')" in result.stderr
    assert "acme is misconfigured" in result.stderr
    assert "Traceback" not in result.stderr


def test_definitions_in_a_module_are_listed_in_source_order() -> None:
    import sys

    assert [d.name for d in definitions_in(sys.modules[__name__])] == ["test.isolate_device"]
