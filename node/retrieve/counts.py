"""How many instances a source holds for a study and each series: the completeness evidence.

C-FIND or QIDO-RS NumberOfStudyRelatedInstances / NumberOfSeriesRelatedInstances
(PS3.4 C.3.4, PS3.18 10.6.3), asked by the assembler before it takes a quiet
study from a configured source as complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydicom.dataset import Dataset

from node.config import Source
from node.retrieve.dicomweb import http_client, json_first, qido_count, raise_for
from node.retrieve.dimse import RetrieveError, cfind

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyCounts:
    """How many instances a source holds for a study and for each of its series."""

    study: int | None
    series: dict[str, int]


def query_counts(source: Source, study_uid: str, calling: str, timeout: float) -> StudyCounts:
    """Ask ``source`` how many instances the study and each series hold."""
    if source.dimse is not None:
        study_q = Dataset()
        study_q.QueryRetrieveLevel, study_q.StudyInstanceUID = "STUDY", study_uid
        study_q.NumberOfStudyRelatedInstances = None
        studies = cfind(source.dimse, calling, study_q, timeout)
        series_q = Dataset()
        series_q.QueryRetrieveLevel, series_q.StudyInstanceUID = "SERIES", study_uid
        series_q.SeriesInstanceUID, series_q.NumberOfSeriesRelatedInstances = "", None
        series = cfind(source.dimse, calling, series_q, timeout)
        rows = [
            (str(s.get("SeriesInstanceUID", "")), s.get("NumberOfSeriesRelatedInstances"))
            for s in series
        ]
        total = studies[0].get("NumberOfStudyRelatedInstances") if studies else None
    else:
        if source.dicomweb is None:
            raise RetrieveError("source has neither dimse nor dicomweb")
        with http_client(source.dicomweb) as client:
            total = qido_count(
                client,
                f"{source.dicomweb.url}/studies",
                {"StudyInstanceUID": study_uid, "includefield": "00201208"},
                "00201208",
            )
            response = client.get(
                f"{source.dicomweb.url}/studies/{study_uid}/series",
                params={"includefield": "00201209"},
                headers={"Accept": "application/dicom+json"},
            )
            raise_for(response)
            rows = [
                (json_first(s, "0020000E"), json_first(s, "00201209"))
                for s in (response.json() if response.content else [])
            ]
    return StudyCounts(
        int(total) if total not in (None, "") else None,
        {uid: int(n) for uid, n in rows if uid and n not in (None, "")},
    )
