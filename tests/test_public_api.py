"""The public surface: what ``import tocsin`` offers, and the one error tree callers catch."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import tocsin
from tocsin import errors

PUBLIC = [
    "__version__",
    "action",
    "ActionContext",
    "SecretName",
    "UrlTemplate",
    "EscapedValues",
    "WRITTEN_AS_IS",
    "TocsinError",
    "RunbookError",
    "InputError",
    "TemplateError",
    "ActionError",
    "IntegrationError",
    "UnknownActionError",
    "ConfigurationError",
    "DecisionRefused",
    "StepFailed",
    "RunStopped",
    "Problem",
    "Location",
    "Integration",
    "DeclaredSecret",
]

# Fake services (each integration's ``fake`` module and its ``fake_*`` parts, the sandbox's
# base): their errors are the fakes' own answers to a client, never seen by a caller of Tocsin.
FAKES = ("tocsin.sandbox.",)


def _is_fake(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return name.startswith(FAKES) or last in ("fake", "simulated_user") or last.startswith("fake_")


def _all_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(tocsin.__path__, prefix="tocsin."):
        if not _is_fake(info.name) and not info.name.endswith(".__main__"):
            names.append(info.name)
    return names


def test_the_public_names_are_exactly_the_documented_ones() -> None:
    # A name added to or dropped from the surface is a decision: change this list with it.
    assert sorted(tocsin.__all__) == sorted(PUBLIC)
    assert sorted(dir(tocsin)) == sorted(PUBLIC)


def test_each_public_name_resolves_to_the_object_of_its_module() -> None:
    for name in tocsin.__all__:
        if name == "__version__":
            continue
        value = getattr(tocsin, name)
        home = tocsin._HOMES[name]
        assert value is getattr(importlib.import_module(home), name), name


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        tocsin.does_not_exist  # noqa: B018
    except AttributeError as exc:
        assert "does_not_exist" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("tocsin.does_not_exist resolved")


def test_importing_tocsin_loads_neither_prefect_nor_pydantic() -> None:
    code = (
        "import sys, tocsin; print(sorted(m for m in ('prefect', 'pydantic') if m in sys.modules))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert shown.strip() == "[]"


def test_every_exception_a_caller_can_see_is_in_the_tocsin_error_tree() -> None:
    outside = []
    for name in _all_modules():
        module = importlib.import_module(name)
        for attribute, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and not attribute.startswith("_")
                and not issubclass(value, errors.TocsinError)
            ):
                outside.append(f"{name}.{attribute}")
    assert outside == []


def test_the_error_tree_in_the_docstring_names_every_error_class() -> None:
    for name in _all_modules():
        importlib.import_module(name)
    seen: set[str] = set()
    pending: list[type[errors.TocsinError]] = [errors.TocsinError]
    while pending:
        cls = pending.pop()
        seen.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    documented = errors.__doc__ or ""
    missing = sorted(name for name in seen if name not in documented)
    assert missing == [], f"add these to the tree in tocsin/errors.py's docstring: {missing}"


def test_each_error_class_has_its_exit_code() -> None:
    assert errors.TocsinError.exit_code == 1
    assert errors.InputError.exit_code == 2
    assert errors.ConfigurationError.exit_code == 3
    error = errors.InputError("office_id is missing", "pass --input office_id=OF-1")
    assert (str(error), error.hint) == ("office_id is missing", "pass --input office_id=OF-1")
