"""QIDO-RS search and WADO-RS metadata over the files the node holds (PS3.18 10.6, 10.4).

The node answers for the result objects it wrote and, when
``api.serve_inputs`` is set, for the received instances still in its spool.
Attributes come from each file's header (read once and cached); matching
follows PS3.18 8.3.4 in a practical subset: single values, UID lists
(``a,b``), wildcards (``*``, ``?``) and date ranges (``20240101-20241231``).
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydicom import dcmread
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from node.db.listing import DicomFile, Listings

logger = logging.getLogger(__name__)

STUDY_KEYS = (
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyInstanceUID",
    "StudyDescription",
)
SERIES_KEYS = (
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "SeriesInstanceUID",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
)
INSTANCE_KEYS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)
#: Query keys that are not attributes (PS3.18 8.3.4 and 8.3.5).
CONTROL_KEYS = frozenset({"limit", "offset", "includefield", "fuzzymatching"})
_BULK_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})


class QueryError(ValueError):
    """A QIDO-RS query the node cannot run (answered 400)."""


@lru_cache(maxsize=4096)
def _header(path: str, _mtime_ns: int) -> Dataset:
    return dcmread(path, stop_before_pixels=True)


def read_header(path: str) -> Dataset | None:
    """The cached header of a held file (``None`` when it is gone or unreadable)."""
    try:
        return _header(path, os.stat(path).st_mtime_ns)
    except (OSError, ValueError, EOFError) as exc:
        logger.warning(
            "cannot read %s for DICOMweb: %s", os.path.basename(path), type(exc).__name__
        )
        return None


@dataclass(frozen=True)
class HeldFile:
    """A held file with its header."""

    file: DicomFile
    header: Dataset


def _copy(source: Dataset, target: Dataset, keywords: Iterable[str]) -> None:
    for keyword in keywords:
        if keyword in source:
            target[keyword] = source[keyword]


def _values(actual: Any) -> list[str]:
    if actual is None:
        return [""]
    if isinstance(actual, (list, tuple, MultiValue)):
        return [str(v) for v in actual]
    return [str(actual)]


def _match_value(wanted: str, actual: Any, vr: str | None) -> bool:
    values = _values(actual)
    if vr == "UI":
        return any(v in {w.strip() for w in wanted.replace("\\", ",").split(",")} for v in values)
    if vr in ("DA", "TM", "DT") and "-" in wanted:
        low, _, high = wanted.partition("-")
        return any((not low or v >= low) and (not high or v <= high + "~") for v in values)
    if "*" in wanted or "?" in wanted:
        return any(fnmatch.fnmatchcase(v.upper(), wanted.upper()) for v in values)
    return any(v.upper() == wanted.upper() for v in values)


def _keyword(key: str) -> str:
    """A query key (keyword or ``ggggeeee``) as a keyword."""
    if tag_for_keyword(key) is not None:
        return key
    try:
        keyword = keyword_for_tag(Tag(int(key, 16)))
    except ValueError as exc:
        raise QueryError(f"unknown query key {key!r}") from exc
    if not keyword:
        raise QueryError(f"unknown query key {key!r}")
    return keyword


def check_query(query: Mapping[str, str]) -> None:
    """Refuse unknown query keys and bad paging values before searching (PS3.18 8.3.4)."""
    for key in query:
        if key not in CONTROL_KEYS:
            _keyword(key)
    _page([], query)


def matches(ds: Dataset, query: Mapping[str, str]) -> bool:
    """Whether a result dataset satisfies every attribute condition of ``query``."""
    for key, wanted in query.items():
        if key in CONTROL_KEYS or wanted == "":
            continue
        keyword = _keyword(key)
        element = ds.get(keyword)
        if element is None:
            return False
        elem = ds[keyword]
        if not _match_value(wanted, elem.value, elem.VR):
            return False
    return True


class DicomwebQueries:
    """QIDO-RS search and WADO-RS file selection over held files.

    Parameters
    ----------
    listings : Listings
        File lookups in the audit database.
    serve_inputs : bool
        Whether received instances are served beside the node's results.
    """

    def __init__(self, listings: Listings, serve_inputs: bool) -> None:
        self._listings = listings
        self._serve_inputs = serve_inputs

    def files(
        self,
        study_uid: str | None = None,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> list[HeldFile]:
        found = self._listings.result_files(study_uid, series_uid, sop_uid)
        if self._serve_inputs:
            seen = {f.sop_instance_uid for f in found}
            found += [
                f
                for f in self._listings.input_files(study_uid, series_uid, sop_uid)
                if f.sop_instance_uid not in seen
            ]
        held = []
        for f in found:
            header = read_header(f.path)
            if header is not None:
                held.append(HeldFile(f, header))
        return held

    # -- QIDO-RS -------------------------------------------------------------------

    def studies(self, query: Mapping[str, str], url: Callable[[str], str]) -> list[Dataset]:
        """Search for Studies (PS3.18 10.6.1, Table 10.6.3-3 attributes)."""
        by_study: dict[str, list[HeldFile]] = {}
        for held in self.files(_uid(query, "StudyInstanceUID")):
            by_study.setdefault(held.file.study_instance_uid, []).append(held)
        results = []
        for study_uid, files in by_study.items():
            ds = Dataset()
            _copy(files[0].header, ds, STUDY_KEYS)
            ds.StudyInstanceUID = study_uid
            ds.ModalitiesInStudy = sorted({str(h.header.get("Modality", "")) for h in files} - {""})
            ds.NumberOfStudyRelatedSeries = len({h.file.series_instance_uid for h in files})
            ds.NumberOfStudyRelatedInstances = len(files)
            ds.RetrieveURL = url(f"studies/{study_uid}")
            results.append(ds)
        return _page([r for r in results if _matches_modalities(r, query)], query)

    def series(
        self, query: Mapping[str, str], url: Callable[[str], str], study_uid: str | None = None
    ) -> list[Dataset]:
        """Search for Series (PS3.18 10.6.1, Table 10.6.3-4 attributes)."""
        by_series: dict[str, list[HeldFile]] = {}
        for held in self.files(
            study_uid or _uid(query, "StudyInstanceUID"), _uid(query, "SeriesInstanceUID")
        ):
            by_series.setdefault(held.file.series_instance_uid, []).append(held)
        results = []
        for series_uid, files in by_series.items():
            ds = Dataset()
            if study_uid is None:
                _copy(files[0].header, ds, STUDY_KEYS)
            _copy(files[0].header, ds, SERIES_KEYS)
            ds.StudyInstanceUID = files[0].file.study_instance_uid
            ds.SeriesInstanceUID = series_uid
            ds.NumberOfSeriesRelatedInstances = len(files)
            ds.RetrieveURL = url(f"studies/{ds.StudyInstanceUID}/series/{series_uid}")
            results.append(ds)
        return _page([r for r in results if matches(r, _without(query, "StudyInstanceUID"))], query)

    def instances(
        self,
        query: Mapping[str, str],
        url: Callable[[str], str],
        study_uid: str | None = None,
        series_uid: str | None = None,
    ) -> list[Dataset]:
        """Search for Instances (PS3.18 10.6.1, Table 10.6.3-5 attributes)."""
        results = []
        for held in self.files(
            study_uid or _uid(query, "StudyInstanceUID"),
            series_uid or _uid(query, "SeriesInstanceUID"),
            _uid(query, "SOPInstanceUID"),
        ):
            ds = Dataset()
            if study_uid is None:
                _copy(held.header, ds, STUDY_KEYS)
            if series_uid is None:
                _copy(held.header, ds, SERIES_KEYS)
            _copy(held.header, ds, INSTANCE_KEYS)
            f = held.file
            ds.StudyInstanceUID, ds.SeriesInstanceUID = f.study_instance_uid, f.series_instance_uid
            ds.SOPInstanceUID, ds.SOPClassUID = f.sop_instance_uid, f.sop_class_uid
            ds.RetrieveURL = url(
                f"studies/{f.study_instance_uid}/series/{f.series_instance_uid}"
                f"/instances/{f.sop_instance_uid}"
            )
            results.append(ds)
        return _page(
            [
                r
                for r in results
                if matches(
                    r, _without(query, "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
                )
            ],
            query,
        )


def metadata_json(held: HeldFile, bulk_url: Callable[[HeldFile, int], str]) -> dict[str, Any]:
    """WADO-RS metadata of one instance (PS3.18 10.4.1.1.2): DICOM JSON, bulk data by URI."""
    full = dcmread(held.file.path)
    full.remove_private_tags()

    def bulk(element: Any) -> str:
        return bulk_url(held, int(element.tag))

    return full.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=bulk)


def bulk_value(held: HeldFile, tag: int) -> bytes | None:
    """The raw value of a bulk data element of a held file (top level only)."""
    full = dcmread(held.file.path)
    element = full.get(Tag(tag))
    if element is None or element.VR not in _BULK_VRS or element.value is None:
        return None
    value = element.value
    return bytes(value) if isinstance(value, (bytes, bytearray)) else None


def to_json(datasets: Sequence[Dataset]) -> list[dict[str, Any]]:
    return [ds.to_json_dict() for ds in datasets]


def _uid(query: Mapping[str, str], keyword: str) -> str | None:
    tag = f"{tag_for_keyword(keyword):08X}"
    value = query.get(keyword) or query.get(tag)
    return value if value and "," not in value and "\\" not in value and "*" not in value else None


def _without(query: Mapping[str, str], *keywords: str) -> dict[str, str]:
    drop = set(keywords) | {f"{tag_for_keyword(k):08X}" for k in keywords}
    return {k: v for k, v in query.items() if k not in drop}


def _matches_modalities(ds: Dataset, query: Mapping[str, str]) -> bool:
    rest = dict(query)
    wanted = rest.pop("ModalitiesInStudy", None) or rest.pop("00080061", None)
    if wanted and not {w.strip().upper() for w in wanted.split(",")} & {
        m.upper() for m in ds.ModalitiesInStudy
    }:
        return False
    return matches(ds, rest)


def _page(results: list[Dataset], query: Mapping[str, str]) -> list[Dataset]:
    try:
        offset = max(0, int(query.get("offset", 0)))
        limit = int(query["limit"]) if "limit" in query else None
    except ValueError as exc:
        raise QueryError("limit and offset are non-negative integers") from exc
    if limit is not None and limit < 0:
        raise QueryError("limit is a non-negative integer")
    return results[offset : offset + limit if limit is not None else None]
