"""David Clunie's ``dciodvfy`` for tests: IOD conformance of written objects."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pydicom.dataset import Dataset

from .common import dataset_bytes, require_program


def dciodvfy(source: Path | str | Dataset, *, timeout: float = 60.0) -> list[str]:
    """Run David Clunie's ``dciodvfy`` and return its error lines.

    Parameters
    ----------
    source : path or pydicom.Dataset
        A DICOM Part 10 file, or a dataset (written to a temporary file).
    timeout : float, optional
        Process timeout in seconds, by default 60.

    Returns
    -------
    list of str
        The lines that begin with ``Error`` (warnings are dropped).
    """
    program = require_program("dciodvfy")
    if isinstance(source, Dataset):
        with tempfile.TemporaryDirectory(prefix="dciodvfy-") as directory:
            path = Path(directory) / "object.dcm"
            path.write_bytes(dataset_bytes(source))
            return dciodvfy(path, timeout=timeout)
    completed = subprocess.run(
        [program, str(source)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
    )
    output = completed.stdout + completed.stderr
    return [line.strip() for line in output.splitlines() if line.lstrip().startswith("Error")]


def assert_dciodvfy_clean(source: Path | str | Dataset, *, ignore: Iterable[str] = ()) -> None:
    """Fail unless ``dciodvfy`` reports no errors for `source`.

    Parameters
    ----------
    source : path or pydicom.Dataset
        A DICOM file, or a dataset (written to a temporary Part 10 file).
    ignore : iterable of str, optional
        Substrings of error lines to tolerate (known, justified deviations).

    Raises
    ------
    AssertionError
        Listing every remaining error line.
    """
    errors = dciodvfy(source)
    tolerated = list(ignore)
    remaining = [line for line in errors if not any(text in line for text in tolerated)]
    if remaining:
        name = "dataset" if isinstance(source, Dataset) else str(source)
        listing = "\n  ".join(remaining)
        raise AssertionError(f"dciodvfy found {len(remaining)} error(s) in {name}:\n  {listing}")
