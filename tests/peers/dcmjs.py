"""dcmjs in Node.js: a SEG read the way OHIF reads it.

``tests/js/seg_labelmap.mjs`` parses a SEG with
``dcmjs.adapters.Cornerstone.Segmentation.generateToolState`` (dcmjs pinned in
``tests/js/package.json``; ``deploy/bootstrap.sh`` runs ``npm ci`` there) and
writes the label maps it builds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from .common import PeerError

JS_DIR = Path(__file__).resolve().parents[1] / "js"


def node_executable() -> str | None:
    """The ``node`` program, or ``None`` when Node.js is not installed."""
    return shutil.which("node")


def require_dcmjs() -> str:
    """The ``node`` program, once dcmjs is installed; raise :class:`PeerError` otherwise."""
    executable = node_executable()
    if executable is None:
        raise PeerError("Node.js is not installed")
    if not (JS_DIR / "node_modules" / "dcmjs").is_dir():
        raise PeerError("dcmjs is missing: run `npm ci` in tests/js")
    return executable


def dcmjs_labelmaps(
    seg: Dataset, sources: Sequence[Dataset], workdir: Path, timeout: float = 300
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Read ``seg`` over ``sources`` with dcmjs; return its metadata and label maps.

    Each label map is a ``(frames, rows, columns)`` uint16 array of segment
    numbers, as dcmjs builds it for Cornerstone.
    """
    executable = require_dcmjs()
    seg_path = workdir / "seg.dcm"
    seg.save_as(seg_path, enforce_file_format=True)
    paths = []
    for index, ds in enumerate(sources):
        path = workdir / f"src{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(str(path))
    prefix = workdir / "labelmap"
    subprocess.run(
        [executable, str(JS_DIR / "seg_labelmap.mjs"), str(seg_path), str(prefix), *paths],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=JS_DIR,
    )
    meta: dict[str, Any] = json.loads(prefix.with_suffix(".json").read_text())
    shape = (meta["frames"], meta["rows"], meta["columns"])
    maps = [
        np.fromfile(f"{prefix}.{i}.u16", dtype="<u2").reshape(shape)
        for i in range(meta["labelmaps"])
    ]
    return meta, maps
