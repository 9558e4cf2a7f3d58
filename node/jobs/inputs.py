"""Reading a job's input instances tolerantly, in the worker."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from node.errors import InputError

#: Type 2 attributes of the Patient and General Study modules (PS3.3 C.7.1.1, C.7.2.1):
#: present, possibly empty, in every conformant image. Some senders leave them out;
#: the node reads tolerantly and fills them empty so the results are conformant.
TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def _tolerate(ds: Dataset) -> Dataset:
    for keyword in TYPE2_PATIENT_STUDY:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def read_inputs(paths: Sequence[str]) -> list[Dataset]:
    datasets = []
    for path in paths:
        try:
            datasets.append(_tolerate(dcmread(path)))
        except FileNotFoundError as exc:
            raise InputError(f"input instance missing from the spool: {Path(path).name}") from exc
        except Exception as exc:
            raise InputError(
                f"input instance {Path(path).name} cannot be read: {type(exc).__name__}"
            ) from exc
    return datasets
