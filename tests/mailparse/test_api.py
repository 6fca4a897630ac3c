"""The public surface of konvergo.mailparse."""

from __future__ import annotations

import ast
from pathlib import Path

import konvergo.mailparse as mailparse


def test_public_names_are_sorted_and_importable() -> None:
    """__all__ is sorted (constants, classes, functions) and every name in it exists."""

    def isort_key(name: str) -> tuple[bool, bool, str]:
        return (not name.isupper(), not name[0].isupper(), name)

    assert mailparse.__all__ == sorted(mailparse.__all__, key=isort_key)
    assert all(hasattr(mailparse, name) for name in mailparse.__all__)


def test_package_imports_neither_django_nor_io_modules() -> None:
    """The package stays pure: no Django, sockets, subprocesses or file access imports."""
    forbidden = {"django", "socket", "subprocess", "smtplib", "imaplib", "requests", "mimetypes"}
    package = Path(mailparse.__file__).parent
    for module in package.glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & forbidden, f"{module.name} imports {roots & forbidden}"
