"""What the runner hands a worker process for one job, and what the worker hands back.

Everything here is picklable: the job's :class:`~node.study.plan.ResultPlan`
(what to write, with which identities), its inputs, and, for a job that
compares with a prior or replaces earlier results, what the node found for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dicom_sr.identity import DeviceIdentity
from node.db.jobs import WrittenOutput
from node.errors import JobError
from node.study.plan import ResultPlan


@dataclass(frozen=True)
class PriorInputs:
    """The prior series the node fetched for a prior-compare job (see :mod:`node.retrieve.prior`).

    Parameters
    ----------
    input_paths : tuple[str, ...]
        Spool paths of the prior series' instances.
    study_instance_uid, series_instance_uid : str
        The prior's identity, as found by C-FIND.
    study_date : str
        The prior's Study Date (DA), for the summary.
    source : str
        Name of the configured source it came from.
    """

    input_paths: tuple[str, ...]
    study_instance_uid: str
    series_instance_uid: str
    study_date: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if not self.input_paths:
            raise JobError("a prior series needs at least one instance")


@dataclass(frozen=True)
class SupersededOutput:
    """A result object of an earlier job this job replaces (``late_series: rerun``)."""

    job_id: int
    variant: str | None
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    path: str


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to run one job (picklable).

    Parameters
    ----------
    job_id : int
        The job.
    pipeline_name : str
        Registered or configured pipeline name.
    input_paths : tuple[str, ...]
        Spool paths of the series' instances.
    plan : ResultPlan
        What to write; the worker writes exactly this.
    output_dir : str
        The job's result directory.
    device : DeviceIdentity
        The node as equipment.
    pipeline_config : dict, optional
        A configured (MONAI bundle) pipeline's settings.
    prior : PriorInputs, optional
        The prior series fetched for a prior-compare job.
    withdrawals : dict
        Per destination, what of the earlier jobs this one replaces it
        accepted: that destination's rejection note withdraws them.
    """

    job_id: int
    pipeline_name: str
    input_paths: tuple[str, ...]
    plan: ResultPlan
    output_dir: str
    device: DeviceIdentity
    pipeline_config: dict[str, Any] | None = None
    prior: PriorInputs | None = None
    withdrawals: dict[str, tuple[SupersededOutput, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class JobOutcome:
    """What a worker reports back for a successful job."""

    outputs: tuple[WrittenOutput, ...]
    summary: dict[str, Any]
    pipeline_version: str
    timings: dict[str, float] = field(default_factory=dict)
