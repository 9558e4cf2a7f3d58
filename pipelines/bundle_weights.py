"""A bundle's weights file and its SHA-256, checked before any bundle code runs.

The node configures each bundle with the SHA-256 of ``models/model.pt``;
:func:`verify_weights` refuses to go on when the file on disk differs, so a
replaced or corrupted model is never loaded. Only :mod:`hashlib`: the node
may import this module at start-up without torch or MONAI.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipelines.errors import PipelineError

#: Where a bundle keeps its weights, relative to the bundle directory.
WEIGHTS_FILE = Path("models") / "model.pt"


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_weights(name: str, bundle: Path, expected_sha256: str) -> Path:
    """The path of ``bundle``'s weights once their SHA-256 is ``expected_sha256``.

    Raises
    ------
    PipelineError
        When the weights file is missing or its SHA-256 differs.
    """
    weights = bundle / WEIGHTS_FILE
    if not weights.is_file():
        raise PipelineError(f"bundle {name}: weights file {weights} is missing")
    actual = sha256_of(weights)
    if actual != expected_sha256:
        raise PipelineError(
            f"bundle {name}: SHA-256 of {weights} is {actual}, configured "
            f"{expected_sha256}; refusing to load"
        )
    return weights
