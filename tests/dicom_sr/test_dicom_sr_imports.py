"""dicom_sr must not import torch, monai or node (house rule: hard package boundaries)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import dicom_sr

FORBIDDEN = ("torch", "monai", "node")
PACKAGE = Path(dicom_sr.__file__).resolve().parent


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_sources_import_no_forbidden_package() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert not _imported_roots(path) & set(FORBIDDEN), path


def test_importing_dicom_sr_loads_no_forbidden_module() -> None:
    code = (
        "import sys, dicom_sr, dicom_sr.seg, dicom_sr.sr\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parent,
        timeout=120,
    )
    assert completed.stdout.strip() == ""
