"""``late_series: rerun`` replaces earlier results: an IHE IOCM rejection note withdraws them.

Half a series reaches the node, is analysed and its SEG and SR are stored in
Orthanc; then the rest arrives. The series is analysed again as a whole, and
the new job sends, beside its own SEG and SR, a Key Object Selection titled
"Rejected for Quality Reasons" (DCM 113001) listing the first job's objects,
so an IOCM archive hides them and any viewer shows they were withdrawn.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import peers
import pytest

from node.db.models import JobState

pytestmark = pytest.mark.slow


def _files(directory: Path, datasets: list[Any]) -> list[Path]:
    directory.mkdir(exist_ok=True)
    paths = []
    for ds in datasets:
        paths.append(directory / f"{ds.SOPInstanceUID}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def _delivered(node: Any, count: int) -> list[Any]:
    jobs = [j for j in node.store.list_jobs() if j.state is JobState.DELIVERED]
    return sorted(jobs, key=lambda j: j.id) if len(jobs) >= count else []


def test_rerun_withdraws_the_earlier_results(
    database_url: str, make_node: Callable[..., Any], chest_phantom: Any, tmp_path: Path
) -> None:
    with peers.Orthanc() as orthanc:
        node = make_node(
            database_url,
            destinations={
                "pacs": {
                    "dimse": {
                        "ae_title": orthanc.aet,
                        "host": "127.0.0.1",
                        "port": orthanc.dicom_port,
                    }
                }
            },
            routes=[
                {
                    "name": "ct",
                    "match": {"Modality": "CT"},
                    "pipelines": ["ct-anatomy"],
                    "send_to": ["pacs"],
                    "late_series": "rerun",
                }
            ],
        )
        orthanc.add_modality("ainode", "AINODE", "127.0.0.1", node.dicom_port)
        files = _files(tmp_path / "send", chest_phantom.datasets)
        study_uid = str(chest_phantom.datasets[0].StudyInstanceUID)

        peers.storescu(
            "127.0.0.1", node.dicom_port, "AINODE", files[:40], calling_aet="MODALITY", check=True
        )
        [first] = peers.wait_for(
            lambda: _delivered(node, 1), timeout=120, what="the first job delivered"
        )
        first_outputs = {o.sop_instance_uid for o in node.store.get_job(first.id)[0].outputs}
        assert len(first_outputs) == 2  # SEG + SR of 40 slices

        peers.storescu(
            "127.0.0.1", node.dicom_port, "AINODE", files[40:], calling_aet="MODALITY", check=True
        )
        _, second = peers.wait_for(
            lambda: _delivered(node, 2), timeout=120, what="the re-run delivered"
        )

        job, _, _ = node.store.get_job(second.id)
        assert len(job.inputs) == len(files)  # the whole series, analysed again
        assert node.store.get_job(first.id)[0].superseded_by_job_id == second.id
        [superseded] = node.store.events(study_uid, kind="job_superseded")
        assert superseded.job_id == first.id and f"superseded by job {second.id}" in (
            superseded.detail or ""
        )
        [note_output] = [o for o in job.outputs if o.kind == "REJECT"]
        assert (
            note_output.variant == "to:pacs"
        )  # one note per destination, listing what it accepted
        assert set(job.summary["withdrawn"]["pacs"]) == first_outputs

        # Orthanc holds both result sets and the rejection note
        [ko_id] = orthanc.find_instances_by_tag(StudyInstanceUID=study_uid, Modality="KO")
        note = orthanc.get_instance_dataset(ko_id)
        assert note.SOPInstanceUID == note_output.sop_instance_uid
        title = note.ConceptNameCodeSequence[0]
        assert (title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning) == (
            "113001",
            "DCM",
            "Rejected for Quality Reasons",
        )
        withdrawn = {
            item.ReferencedSOPInstanceUID
            for study in note.CurrentRequestedProcedureEvidenceSequence
            for series in study.ReferencedSeriesSequence
            for item in series.ReferencedSOPSequence
        }
        assert withdrawn == first_outputs  # exactly the first job's objects, none of the new ones
        assert (
            note.PatientID == chest_phantom.datasets[0].PatientID
            and note.StudyInstanceUID == study_uid
        )
        assert len(orthanc.find_instances_by_tag(StudyInstanceUID=study_uid, Modality="SEG")) == 2
        peers.assert_dciodvfy_clean(note)


def test_a_withdrawn_object_whose_file_is_gone_is_named_by_its_uids(
    chest_phantom: Any, tmp_path: Path
) -> None:
    """The rejection note needs only UIDs.

    A result file lost to a disk clean-up does not fail the job.
    """
    from dicom_sr.identity import DeviceIdentity
    from dicom_sr.kos import write_rejection_note
    from node.jobs.results import _reference
    from node.jobs.spec import SupersededOutput
    from pipelines.ct_anatomy import CtAnatomyPipeline

    source = chest_phantom.datasets[0]
    gone = SupersededOutput(
        7,
        "default",
        "1.2.840.10008.5.1.4.1.1.66.4",
        "2.25.1234",
        "2.25.5678",
        str(tmp_path / "missing.dcm"),
    )
    corrupt_path = tmp_path / "corrupt.dcm"
    corrupt_path.write_bytes(b"not DICOM at all")
    corrupt = SupersededOutput(
        7, "default", "1.2.840.10008.5.1.4.1.1.88.34", "2.25.4321", "2.25.8765", str(corrupt_path)
    )
    from dicom_sr.identity import AlgorithmIdentity, ResultIdentity

    note = write_rejection_note(
        [_reference(gone, source), _reference(corrupt, source)],
        source,
        ResultIdentity(
            series_instance_uid="2.25.99",
            sop_instance_uid="2.25.98",
            series_number=9007,
            series_description="AI ct-anatomy withdrawn results",
        ),
        DeviceIdentity(software_versions="test", device_serial_number="AINODE"),
        AlgorithmIdentity(name="ct-anatomy", version=CtAnatomyPipeline.version),
        reason="test",
    )
    listed = {
        item.ReferencedSOPInstanceUID
        for study in note.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert listed == {"2.25.1234", "2.25.4321"}
    assert note.PatientID == source.PatientID
    peers.assert_dciodvfy_clean(note)
