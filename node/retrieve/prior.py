"""Find and fetch the prior study of a prior-compare job (PS3.4 C.4 Query/Retrieve).

Runs in the runner's slot thread, before the job is handed to a worker
(:meth:`node.app.Node._job_spec`). For the job's series it:

1. **picks the source** to ask: the configured source whose calling AE title
   sent the study (``Settings.source_for_calling_ae``), else the only
   configured source, else it fails and says why;
2. **queries** it (Study Root C-FIND): at STUDY level every study of the
   patient (PatientID, StudyDate, StudyTime, StudyInstanceUID,
   ModalitiesInStudy); the candidates are the other studies dated strictly
   before the current one (StudyDate + StudyTime), newest first; at SERIES
   level each candidate's series (Modality, BodyPartExamined,
   NumberOfSeriesRelatedInstances). The first candidate with a series of the
   same Modality and the same BodyPartExamined (case-insensitive; both empty
   counts as the same) is the prior; of several such series the one with
   most instances is taken;
3. **retrieves** that series, unless the node already holds all its
   instances: C-GET at SERIES level on one association (instances audited
   with ``source="prior"``), or C-MOVE to the node's own Storage SCP (audited
   as ordinary DIMSE arrivals), as the source's ``retrieve`` says;
4. marks the prior's instances dispatched (``study_complete`` audit row
   saying why), so the assembler does not analyse the prior as a new study,
   and records a ``prior_retrieved`` event for the current study.

No prior gives :class:`PriorNotFound`: the job fails with "no prior study of
the same modality and body part found on <source>". DICOMweb sources are not
searched yet (a clear failure says so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset

from node.config import DimseSource, Source
from node.db.models import Instance, Job
from node.db.store import AuditStore
from node.errors import JobError
from node.jobs.spec import PriorInputs
from node.retrieve.dimse import RetrieveError, cfind, cget, cmove
from node.spool import Spool

logger = logging.getLogger(__name__)

#: ``source`` of the instance rows a prior C-GET records.
PRIOR_SOURCE = "prior"


class PriorNotFound(JobError):
    """The source holds no earlier study of the patient with a matching series."""


@dataclass(frozen=True)
class CurrentStudy:
    """What the prior search needs to know about the job's own series."""

    patient_id: str
    study_instance_uid: str
    study_date: str
    study_time: str
    modality: str
    body_part_examined: str

    @classmethod
    def from_dataset(cls, ds: Dataset) -> CurrentStudy:
        """From one instance of the current series.

        Raises
        ------
        JobError
            When the series has no Patient ID or Study Date to search by.
        """
        current = cls(
            patient_id=str(ds.get("PatientID", "") or ""),
            study_instance_uid=str(ds.get("StudyInstanceUID", "")),
            study_date=str(ds.get("StudyDate", "") or ""),
            study_time=str(ds.get("StudyTime", "") or ""),
            modality=str(ds.get("Modality", "") or ""),
            body_part_examined=str(ds.get("BodyPartExamined", "") or ""),
        )
        if not current.patient_id.strip():
            raise JobError("prior-compare: the current study has no Patient ID to search priors by")
        if not current.study_date.strip():
            raise JobError(
                "prior-compare: the current study has no Study Date; "
                "cannot tell which study is prior"
            )
        return current


@dataclass(frozen=True)
class PriorCandidate:
    """The prior series chosen on the source."""

    study_instance_uid: str
    series_instance_uid: str
    study_date: str
    study_time: str
    number_of_instances: int | None


def _when(date: str, time: str) -> tuple[str, str]:
    """Sortable (DA, TM): the time's HHMMSS padded, its fraction kept."""
    whole, _, fraction = time.strip().partition(".")
    return date.strip(), whole.ljust(6, "0") + "." + fraction.ljust(6, "0")


def _same_body_part(a: str, b: str) -> bool:
    return a.strip().upper() == b.strip().upper()


def choose_source(
    sources: Mapping[str, Source],
    senders: Iterable[str],
    find_source: Callable[[str | None], tuple[str, Source] | None],
) -> tuple[str, Source]:
    """The source to search: the study's sender if configured, else the only source.

    Raises
    ------
    JobError
        With no configured source, or several and none sent the study.
    """
    senders = sorted(senders)
    for ae in senders:
        found = find_source(ae)
        if found is not None:
            return found
    if len(sources) == 1:
        return next(iter(sources.items()))
    if not sources:
        raise JobError(
            "prior-compare: no source is configured to search for a prior study (settings: sources)"
        )
    raise JobError(
        f"prior-compare: cannot tell which source to search for a prior: the study was sent by "
        f"{', '.join(senders) or 'no known AE title'}, "
        "which is no configured source's calling AE title, "
        f"and {len(sources)} sources are configured (set sources.<name>.calling_ae_titles)"
    )


def _study_query(current: CurrentStudy) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = current.patient_id
    query.StudyInstanceUID = ""
    query.StudyDate = ""
    query.StudyTime = ""
    query.ModalitiesInStudy = ""
    return query


def _series_query(study_uid: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = ""
    query.Modality = ""
    query.BodyPartExamined = ""
    query.SeriesNumber = None
    query.NumberOfSeriesRelatedInstances = None
    return query


def _earlier_studies(found: Iterable[Dataset], current: CurrentStudy) -> list[Dataset]:
    """Studies of the same patient dated strictly before ``current``, newest first."""
    now = _when(current.study_date, current.study_time)
    earlier = []
    for study in found:
        modalities = _values(study.get("ModalitiesInStudy"))
        if (
            str(study.get("PatientID", current.patient_id)) != current.patient_id
            or str(study.get("StudyInstanceUID", "")) in ("", current.study_instance_uid)
            or not str(study.get("StudyDate", "") or "").strip()
            or (modalities and current.modality.upper() not in modalities)
        ):
            continue
        if _when(str(study.StudyDate), str(study.get("StudyTime", "") or "")) < now:
            earlier.append(study)
    return sorted(
        earlier,
        key=lambda s: _when(str(s.StudyDate), str(s.get("StudyTime", "") or "")),
        reverse=True,
    )


def _values(value: Any) -> set[str]:
    """The upper-case values of a CS element that may be empty, single or multi-valued."""
    if value in (None, ""):
        return set()
    items = [value] if isinstance(value, str) else list(value)
    return {str(v).strip().upper() for v in items if str(v).strip()}


def _count(series: Dataset) -> int | None:
    value = series.get("NumberOfSeriesRelatedInstances")
    return int(value) if value not in (None, "") else None


def find_prior(source: DimseSource, current: CurrentStudy, calling: str) -> PriorCandidate | None:
    """The most recent prior series of the same modality and body part on ``source``.

    See the module docstring.
    """
    studies = _earlier_studies(
        cfind(source, calling, _study_query(current), source.timeout_seconds), current
    )
    for study in studies:
        uid = str(study.StudyInstanceUID)
        matching = [
            s
            for s in cfind(source, calling, _series_query(uid), source.timeout_seconds)
            if str(s.get("Modality", "")).upper() == current.modality.upper()
            and _same_body_part(
                str(s.get("BodyPartExamined", "") or ""), current.body_part_examined
            )
            and str(s.get("SeriesInstanceUID", ""))
        ]
        if matching:
            best = max(matching, key=lambda s: _count(s) or 0)
            return PriorCandidate(
                uid,
                str(best.SeriesInstanceUID),
                str(study.StudyDate),
                str(study.get("StudyTime", "") or ""),
                _count(best),
            )
    return None


# -- retrieval ---------------------------------------------------------------------------


def _series_identifier(prior: PriorCandidate) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = prior.study_instance_uid
    ds.SeriesInstanceUID = prior.series_instance_uid
    return ds


def retrieve_series(
    source: DimseSource, prior: PriorCandidate, calling: str, spool: Spool, store: AuditStore
) -> int:
    """C-GET (one association) or C-MOVE (to ``calling``, this node) the prior series.

    Returns the number of instances retrieved.
    """
    if source.retrieve == "c-move":
        return cmove(source, _series_identifier(prior), calling, calling)
    return cget(source, _series_identifier(prior), calling, spool, store, audit_source=PRIOR_SOURCE)


# -- the hook ------------------------------------------------------------------------------


class PriorFinder:
    """Finds, fetches and audits the prior series of one job (module docstring).

    Parameters
    ----------
    store, spool : AuditStore, Spool
        Where the prior's instances are recorded and written.
    sources : mapping
        Configured sources by name.
    calling_ae_title : str
        This node's AE title (calling AE, and C-MOVE destination).
    find_source : callable
        ``calling AE title -> (name, Source) | None`` (``Settings.source_for_calling_ae``).
    """

    def __init__(
        self,
        store: AuditStore,
        spool: Spool,
        sources: Mapping[str, Source],
        calling_ae_title: str,
        find_source: Callable[[str | None], tuple[str, Source] | None],
    ) -> None:
        self._store, self._spool = store, spool
        self._sources = dict(sources)
        self._calling = calling_ae_title
        self._find_source = find_source

    def prior_for(self, job: Job) -> PriorInputs:
        """Find and fetch the prior of ``job``'s series.

        Raises
        ------
        PriorNotFound
            When the source holds no earlier study with a matching series.
        JobError
            When no source can be chosen, the current series cannot be read,
            or the source fails to answer or to send the series.
        """
        current = CurrentStudy.from_dataset(_first_header(job))
        name, source = choose_source(
            self._sources, self._store.study_senders(job.study_instance_uid), self._find_source
        )
        if source.dimse is None:
            raise JobError(
                f"prior-compare: source {name!r} is DICOMweb; "
                "priors are searched by DIMSE C-FIND only"
            )
        try:
            prior = find_prior(source.dimse, current, self._calling)
            if prior is None:
                raise PriorNotFound(
                    f"no prior study of the same modality and body part found on {name} "
                    f"({current.modality} "
                    f"{current.body_part_examined or 'no body part'}, before {current.study_date})"
                )
            instances, retrieved = self._fetch(source.dimse, prior)
        except (RetrieveError, OSError, RuntimeError, ValueError) as exc:
            raise JobError(
                f"prior-compare: searching or retrieving the prior on {name} failed: {exc}"
            ) from exc
        self._audit(job, name, prior, instances, retrieved)
        return PriorInputs(
            input_paths=tuple(i.path for i in instances if i.path),
            study_instance_uid=prior.study_instance_uid,
            series_instance_uid=prior.series_instance_uid,
            study_date=prior.study_date,
            source=name,
        )

    def _fetch(self, source: DimseSource, prior: PriorCandidate) -> tuple[list[Instance], int]:
        """The prior's instance rows, retrieving the series unless all of it is held already."""
        held = self._store.study_series(prior.study_instance_uid).get(prior.series_instance_uid, [])
        retrieved = 0
        if not held or prior.number_of_instances is None or len(held) < prior.number_of_instances:
            retrieved = retrieve_series(source, prior, self._calling, self._spool, self._store)
            held = self._store.study_series(prior.study_instance_uid).get(
                prior.series_instance_uid, []
            )
        if not held:
            raise RetrieveError(
                f"the source sent no instance of prior series {prior.series_instance_uid}"
            )
        return held, retrieved

    def _audit(
        self, job: Job, name: str, prior: PriorCandidate, instances: list[Instance], retrieved: int
    ) -> None:
        pending = [i.id for i in instances if not i.dispatched]
        if pending:  # keep the assembler from analysing the prior as a new study
            self._store.dispatch_study(
                prior.study_instance_uid,
                pending,
                [],
                [],
                f"retrieved from {name} as the prior of job {job.id} "
                f"(study {job.study_instance_uid}); "
                "not analysed itself",
            )
        self._store.record_event(
            "prior_retrieved",
            f"prior study {prior.study_instance_uid} ({prior.study_date}), "
            f"series {prior.series_instance_uid}: "
            f"{len(instances)} instances, {retrieved} retrieved from {name} now",
            study_instance_uid=job.study_instance_uid,
            job_id=job.id,
        )
        logger.info(
            "job %d: prior series %s from %s, %d instances (%d retrieved)",
            job.id,
            prior.series_instance_uid,
            name,
            len(instances),
            retrieved,
        )


def _first_header(job: Job) -> Dataset:
    """The header of one input instance of ``job`` (pixels not read)."""
    for item in job.inputs:
        try:
            return dcmread(item.path, stop_before_pixels=True)
        except FileNotFoundError:
            continue
        except Exception as exc:  # pydicom raises many types on garbage
            raise JobError(
                f"prior-compare: cannot read input {item.sop_instance_uid}: {type(exc).__name__}"
            ) from exc
    raise JobError("prior-compare: no input instance of the job is left in the spool")
