"""The dependency arrows of docs/architecture.md, enforced.

    model and validation ─→ execution (flows/, Prefect) ─→ actions (integrations/) ─→ audit ─→ report

- What a runbook is, and checking one, need neither Prefect nor any integration.
- Integrations never import the flow: they are called by it through the action seam.
- The core never names an integration: it finds them through entry points.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tocsin"
INTEGRATIONS = ROOT / "integrations"
FLOWS = ROOT / "flows"

MODEL_LAYER = [
    "tocsin.model",
    "tocsin.validation",
    "tocsin.runbook_structure",
    "tocsin.runbook_semantics",
    "tocsin.approval_warnings",
    "tocsin.guards",
    "tocsin.yaml_source",
    "tocsin.templating",
    "tocsin.template_limits",
    "tocsin.schema",
    "tocsin.plan",
    "tocsin.inputs",
    "tocsin.incident",
    "tocsin.errors",
]


def imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """Every module ``path`` imports (at any depth, relative ones made absolute), with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith("tocsin.integrations.")
        ):
            found.append((node.lineno, node.value))  # import_module("tocsin.integrations.x")
    return found


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if ".venv" not in p.parts)


def _package_of(path: Path, root: Path, prefix: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] != "__init__":
        parts = parts[:-1]
    return ".".join([*([prefix] if prefix else []), *parts])


def _names_an_integration(module: str) -> bool:
    return module.startswith(("tocsin.integrations.", "integrations.")) or module in (
        "tocsin.integrations",
        "integrations",
    )


def _is_flow(module: str) -> bool:
    return module.startswith(("tocsin.flows", "flows.")) or module == "flows"


def test_model_and_validation_load_neither_prefect_nor_an_integration() -> None:
    code = (
        "import sys\n"
        f"for name in {MODEL_LAYER!r}: __import__(name)\n"
        "print(sorted({m.split('.')[0] if m.split('.')[0] == 'prefect' else m "
        "for m in sys.modules if m.split('.')[0] == 'prefect' "
        "or m.startswith(('tocsin.integrations', 'tocsin.flows'))}))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    assert loaded == "[]"


def test_integrations_never_import_the_flow() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in python_files(INTEGRATIONS)
        for line, module in imported_modules(path, _package_of(path, ROOT, "tocsin"))
        if _is_flow(module)
    ]
    assert offenders == []


def test_the_core_and_the_flow_never_name_an_integration() -> None:
    core = [p for p in python_files(PACKAGE) if not p.is_symlink()]
    core = [p for p in core if p.relative_to(PACKAGE).parts[0] not in ("integrations", "flows")]
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in [*core, *python_files(FLOWS)]
        for line, module in imported_modules(path, _package_of(path, ROOT, ""))
        if _names_an_integration(module)
    ]
    assert offenders == [], "find integrations through tocsin.integration (entry points) instead"


def test_the_import_scanner_sees_nested_relative_and_dynamic_imports(tmp_path: Path) -> None:
    # The rules above are only as good as this scanner: prove it catches each form.
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import tocsin.flows.runbook\n"
        "def later():\n"
        "    from tocsin.integrations import slack\n"
        "    from .sibling import thing\n"
        "    import_module('tocsin.integrations.jira')\n"
    )
    modules = [m for _, m in imported_modules(sample, "tocsin.integrations.toy")]
    assert "tocsin.flows.runbook" in modules
    assert "tocsin.integrations.slack" in modules
    assert "tocsin.integrations.toy.sibling" in modules
    assert "tocsin.integrations.jira" in modules
