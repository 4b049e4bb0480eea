"""The import graph: the shared core (``rankrm``) never imports up into ``training`` or
``app``. Only the CLI's commands (``rankrm/commands``, the top floor) do: the torch-free
configuration their options are built from when they load, everything else inside the
command that runs. ``rankrm``'s public-name table names modules as strings (PEP 562), not
imports. ``app`` and ``training`` never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _type_only(tree: ast.Module) -> set[int]:
    """Nodes under ``if TYPE_CHECKING:``: never run."""
    return {
        id(child)
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for child in ast.walk(node)
    }


def imports(path: Path) -> list[tuple[str, str]]:
    """(module, where) for each import run in ``path``: where is "module" or "function"."""
    tree = ast.parse(path.read_text(), str(path))
    top, skip = {id(node) for node in tree.body}, _type_only(tree)
    found: list[tuple[str, str]] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        where = "module" if id(node) in top else "function"
        if isinstance(node, ast.Import):
            found += [(alias.name, where) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, where))
    return found


def crossing(package: str, others: tuple[str, ...]) -> list[tuple[Path, str, str]]:
    return [
        (path.relative_to(ROOT), module, where)
        for path in sorted((ROOT / package).rglob("*.py"))
        for module, where in imports(path)
        if module.split(".")[0] in others
    ]


CONFIGURATION = ("training.config", "training.data", "training.export_config", "app.config")
"""Torch-free modules the commands build their options from (``rankrm.opts``)."""


def test_the_shared_core_imports_training_and_app_only_in_cli_commands() -> None:
    """Only the CLI's commands (the top floor) reach up: the configuration their options
    are built from at import, everything else inside the command that runs."""
    found = crossing("rankrm", ("training", "app"))
    in_commands = [f for f in found if f[0].parts[:2] == ("rankrm", "commands")]
    assert any(where == "function" for _, _, where in in_commands)
    assert [f for f in found if f not in in_commands] == []
    assert [f for f in in_commands if f[2] == "module" and f[1] not in CONFIGURATION] == []


def test_training_and_the_service_do_not_import_each_other() -> None:
    assert crossing("app", ("training",)) == []
    assert crossing("training", ("app",)) == []


def test_the_annotation_app_stands_alone() -> None:
    """It uses the core's text rules, client and command helpers, nothing of the rest."""
    allowed = {"annotate", "encoding", "client", "commands"}
    found = [
        f
        for f in crossing("rankrm", ("rankrm",))
        if f[0].parts[1] == "annotate" and f[1].split(".")[1] not in allowed
    ]
    assert found == []
