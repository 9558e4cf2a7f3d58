"""Per-destination viewer profiles: each distinct profile gets its own SEG, SR, SC and KOS.

A PACS whose viewer wants one SEG frame per source slice, a FRACTIONAL SEG
or every slice as a Secondary Capture is configured with a ``profile``; a
modern viewer behind another destination keeps the default (BINARY, empty
frames omitted). The worker writes one set per distinct profile, each SR
references the SEG of its own set, UIDs are stable across re-runs, and
egress sends each destination only its own set (plus what is the same for
all: PDF, derived series, registrations).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import highdicom as hd
import peers
import pytest
from pydicom import dcmread
from pydicom.uid import JPEG2000Lossless

from dicom_sr.identity import DeviceIdentity
from node.config import Destination, ResultProfile, load_settings
from node.db.models import DeliveryState, JobState
from node.jobs.loader import PipelineCache
from node.jobs.spec import JobSpec
from node.jobs.worker import execute_job
from node.study.plan import DEFAULT_VARIANT, ResultPlanner
from node.study.planning import mint_result_uids

LABELMAP_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.7"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


# -- configuration -------------------------------------------------------------------


def test_profile_key_names_only_what_changes_the_objects() -> None:
    assert ResultProfile().key == DEFAULT_VARIANT
    legacy = ResultProfile(seg_type="fractional", omit_empty_frames=False, sc_frames="all")
    assert legacy.key == "fractional+all-frames+sc-all"
    # SC options do not matter to a destination that takes no SC: same objects, same key
    dest = Destination(
        dimse={"ae_title": "X", "host": "h", "port": 104},
        formats=("seg", "sr"),
        profile=ResultProfile(sc_frames="all"),
    )
    assert dest.variant == DEFAULT_VARIANT
    only_sc = Destination(
        dimse={"ae_title": "X", "host": "h", "port": 104},
        formats=("sc",),
        profile=ResultProfile(seg_type="labelmap", sc_frames="all"),
    )
    assert only_sc.variant == "sc-all"


def test_profile_is_read_from_yaml(tmp_path: Path) -> None:
    config = tmp_path / "ainode.yaml"
    config.write_text(
        "destinations:\n"
        "  legacy:\n"
        "    dimse: {ae_title: OLDPACS, host: 10.0.0.5, port: 104}\n"
        "    formats: [seg, sr, sc]\n"
        "    profile: {seg_type: fractional, omit_empty_frames: false, sc_frames: all,\n"
        "              seg_compression: jpeg2000-lossless}\n"
    )
    settings = load_settings(config)
    assert settings.destinations["legacy"].variant == "fractional+all-frames+j2k+sc-all"
    config.write_text(
        "destinations:\n  x:\n    dimse: {ae_title: A, host: h, port: 104}\n"
        "    profile: {seg_type: rle}\n"
    )
    with pytest.raises(Exception, match=r"destinations\.x\.profile\.seg_type"):
        load_settings(config)


# -- the worker writes one set per profile -----------------------------------------------


def _destination(formats: tuple[str, ...], profile: ResultProfile | None = None) -> Destination:
    return Destination.model_validate(
        {
            "dimse": {"ae_title": "PACS", "host": "127.0.0.1", "port": 104},
            "formats": list(formats),
            "profile": (profile or ResultProfile()).model_dump(),
        }
    )


def _spec(
    tmp_path: Path,
    phantom: Any,
    destinations: dict[str, Destination],
    uids: dict[str, Any],
    pipeline: str = "ct-anatomy",
) -> JobSpec:
    inputs = tmp_path / "inputs"
    inputs.mkdir(exist_ok=True)
    paths = []
    for ds in phantom.datasets:
        path = inputs / f"{ds.SOPInstanceUID}.dcm"
        if not path.exists():
            ds.save_as(path, enforce_file_format=True)
        paths.append(str(path))
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    plan = ResultPlanner(destinations).plan(pipeline, list(destinations), uids)
    return JobSpec(
        job_id=1,
        pipeline_name=pipeline,
        input_paths=tuple(paths),
        plan=plan,
        output_dir=str(out),
        device=DeviceIdentity(
            software_versions="test", device_serial_number="AINODE", device_name="AINODE"
        ),
    )


def _sr_referenced_seg(sr: Any) -> set[str]:
    """SOP Instance UIDs of the segmentations the SR's measurement groups reference."""
    report = hd.sr.MeasurementReport.from_sequence(hd.sr.Comprehensive3DSR.from_dataset(sr).content)
    found = set()
    for group in report.get_volumetric_roi_measurement_groups():
        segment = group.referenced_segment
        assert segment is not None
        found.add(str(segment.referenced_sop_instance_uid))
    return found


def test_each_profile_gets_its_own_seg_and_sr(tmp_path: Path, chest_phantom: Any) -> None:
    modern = _destination(("seg", "sr", "pdf"))
    legacy = _destination(
        ("seg", "sr", "sc", "ko"),
        ResultProfile(seg_type="fractional", omit_empty_frames=False, sc_frames="all"),
    )
    newest = _destination(
        ("seg", "sr"), ResultProfile(seg_type="labelmap", seg_compression="jpeg2000-lossless")
    )
    uids = mint_result_uids()
    cache = PipelineCache()
    try:
        destinations = {"legacy": legacy, "newest": newest, "modern": modern}
        outcome = execute_job(_spec(tmp_path, chest_phantom, destinations, uids), cache)
        (tmp_path / "again").mkdir()
        reordered = {"modern": modern, "newest": newest, "legacy": legacy}
        again = execute_job(_spec(tmp_path / "again", chest_phantom, reordered, uids), cache)
    finally:
        cache.close()
    by_variant: dict[str | None, dict[str, Any]] = {}
    for out in outcome.outputs:
        by_variant.setdefault(out.variant, {}).setdefault(out.kind, []).append(out)
    assert set(by_variant) == {None, DEFAULT_VARIANT, legacy.variant, newest.variant}
    assert sorted(by_variant[None]) == ["PDF"]  # written once, for every destination
    assert sorted(by_variant[DEFAULT_VARIANT]) == ["SEG", "SR"]
    assert sorted(by_variant[legacy.variant]) == ["KO", "SC", "SEG", "SR"]
    assert sorted(by_variant[newest.variant]) == ["SEG", "SR"]
    # per variant, its profiled kinds (the PDF is the same for everyone)
    assert outcome.summary["variants"] == {
        DEFAULT_VARIANT: ["seg", "sr"],
        legacy.variant: ["seg", "sr", "sc", "ko"],
        newest.variant: ["seg", "sr"],
    }

    # stable: a re-run (variants in any order) writes the same objects
    assert {o.sop_instance_uid for o in again.outputs} == {
        o.sop_instance_uid for o in outcome.outputs
    }
    # the default set carries the UIDs minted with the job; the others their own
    [default_seg] = by_variant[DEFAULT_VARIANT]["SEG"]
    assert default_seg.sop_instance_uid == uids["SEG"]["sop_instance_uid"]
    assert len({o.sop_instance_uid for o in outcome.outputs}) == len(outcome.outputs)
    assert (
        len(
            {
                by_variant[v]["SEG"][0].series_instance_uid
                for v in (DEFAULT_VARIANT, legacy.variant, newest.variant)
            }
        )
        == 3
    )

    frames = len(chest_phantom.datasets)
    segs = {
        v: dcmread(by_variant[v]["SEG"][0].path)
        for v in (DEFAULT_VARIANT, legacy.variant, newest.variant)
    }
    srs = {
        v: dcmread(by_variant[v]["SR"][0].path)
        for v in (DEFAULT_VARIANT, legacy.variant, newest.variant)
    }
    # default: BINARY, empty frames omitted
    default = segs[DEFAULT_VARIANT]
    assert default.SOPClassUID == SEG_SOP_CLASS and default.SegmentationType == "BINARY"
    assert int(default.NumberOfFrames) < frames * len(default.SegmentSequence)
    # legacy: FRACTIONAL with one frame per source slice and segment; every slice as SC
    fractional = segs[legacy.variant]
    assert fractional.SOPClassUID == SEG_SOP_CLASS and fractional.SegmentationType == "FRACTIONAL"
    assert int(fractional.NumberOfFrames) == frames * len(fractional.SegmentSequence)
    assert len(by_variant[legacy.variant]["SC"]) == frames
    # newest: ct-anatomy's segments overlap (lungs and bone lie in the body), which no
    # LABELMAP can hold: that destination gets BINARY (JPEG 2000) instead, and the job says so
    labelmap = segs[newest.variant]
    assert labelmap.SOPClassUID == SEG_SOP_CLASS and labelmap.SegmentationType == "BINARY"
    assert labelmap.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert any(
        "LABELMAP SEG cannot hold" in n and newest.variant in n for n in outcome.summary["notes"]
    )
    # the same segmentation in all three encodings
    binary = hd.seg.Segmentation.from_dataset(default)
    for variant in (legacy.variant, newest.variant):
        other = hd.seg.Segmentation.from_dataset(segs[variant])
        for number in binary.segment_numbers:
            source = [uid for _, _, uid in binary.get_source_image_uids()]
            a = binary.get_pixels_by_source_instance(
                source, segment_numbers=[number], combine_segments=False, skip_overlap_checks=True
            )
            b = other.get_pixels_by_source_instance(
                source, segment_numbers=[number], combine_segments=False, skip_overlap_checks=True
            )
            assert ((a > 0) == (b > 0)).all(), (variant, number)
    # each SR references the SEG of its own set, never another's
    for variant, sr in srs.items():
        assert _sr_referenced_seg(sr) == {str(segs[variant].SOPInstanceUID)}, variant
    # the legacy KOS references its own SEG and SR
    kos = dcmread(by_variant[legacy.variant]["KO"][0].path)
    referenced = {
        str(item.ReferencedSOPInstanceUID)
        for study in kos.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert {str(fractional.SOPInstanceUID), str(srs[legacy.variant].SOPInstanceUID)} <= referenced
    assert not {str(default.SOPInstanceUID), str(labelmap.SOPInstanceUID)} & referenced
    for ds in (default, fractional, srs[legacy.variant], kos):
        peers.assert_dciodvfy_clean(ds)


def test_labelmap_profile_writes_a_label_map_segmentation(
    tmp_path: Path, chest_phantom: Any
) -> None:
    destinations = {
        "modern": _destination(("seg", "sr")),
        "newest": _destination(("seg", "sr"), ResultProfile(seg_type="labelmap")),
    }
    cache = PipelineCache()
    try:
        outcome = execute_job(
            _spec(
                tmp_path,
                chest_phantom,
                destinations,
                mint_result_uids(),
                "faulty_pipelines:LungsAndBone",
            ),
            cache,
        )
    finally:
        cache.close()
    outputs = {(o.kind, o.variant): o for o in outcome.outputs}
    binary = hd.seg.Segmentation.from_dataset(dcmread(outputs["SEG", DEFAULT_VARIANT].path))
    labelmap_ds = dcmread(outputs["SEG", "labelmap"].path)
    assert (
        labelmap_ds.SOPClassUID == LABELMAP_SOP_CLASS and labelmap_ds.SegmentationType == "LABELMAP"
    )
    labelmap = hd.seg.Segmentation.from_dataset(labelmap_ds)
    source = [uid for _, _, uid in binary.get_source_image_uids()]
    expected = binary.get_pixels_by_source_instance(
        source, combine_segments=True, skip_overlap_checks=False
    )
    got = labelmap.get_pixels_by_source_instance(source, combine_segments=True)
    assert expected.any() and (expected == got).all()
    assert _sr_referenced_seg(dcmread(outputs["SR", "labelmap"].path)) == {
        str(labelmap_ds.SOPInstanceUID)
    }
    assert not any("LABELMAP" in n for n in outcome.summary["notes"])


# -- end to end: two PACS, two profiles ----------------------------------------------


@pytest.mark.slow
def test_each_destination_receives_its_own_profile(
    database_url: str, make_node: Callable[..., Any], chest_phantom: Any, tmp_path: Path
) -> None:
    with peers.Orthanc() as orthanc, peers.StoreSCP("OLDPACS") as old_pacs:
        node = make_node(
            database_url,
            destinations={
                "pacs": {
                    "dimse": {
                        "ae_title": orthanc.aet,
                        "host": "127.0.0.1",
                        "port": orthanc.dicom_port,
                    }
                },
                "old": {
                    "dimse": {"ae_title": old_pacs.aet, "host": "127.0.0.1", "port": old_pacs.port},
                    "formats": ["seg", "sr", "sc"],
                    "profile": {
                        "seg_type": "fractional",
                        "omit_empty_frames": False,
                        "sc_frames": "all",
                    },
                },
            },
            routes=[
                {
                    "name": "ct",
                    "match": {"Modality": "CT"},
                    "pipelines": ["ct-anatomy"],
                    "send_to": ["pacs", "old"],
                }
            ],
        )
        orthanc.add_modality(
            "ainode", "AINODE", "127.0.0.1", node.dicom_port
        )  # Orthanc accepts known AEs only
        peers.storescu(
            "127.0.0.1",
            node.dicom_port,
            "AINODE",
            _saved(tmp_path, chest_phantom.datasets),
            calling_aet="MODALITY",
            check=True,
        )
        job = peers.wait_for(
            lambda: next(
                (j for j in node.store.list_jobs() if j.state is JobState.DELIVERED), None
            ),
            timeout=180,
            what="the job delivered to both destinations",
        )
        _, deliveries, _ = node.store.get_job(job.id)
        assert {d.destination: d.state for d in deliveries} == {
            "pacs": DeliveryState.SUCCEEDED,
            "old": DeliveryState.SUCCEEDED,
        }
        study_uid = str(chest_phantom.datasets[0].StudyInstanceUID)

        pacs_segs = orthanc.find_instances_by_tag(StudyInstanceUID=study_uid, Modality="SEG")
        pacs_srs = orthanc.find_instances_by_tag(StudyInstanceUID=study_uid, Modality="SR")
        assert len(pacs_segs) == 1 and len(pacs_srs) == 1  # not the old PACS's set too
        pacs_seg = orthanc.get_instance_dataset(pacs_segs[0])
        pacs_sr = orthanc.get_instance_dataset(pacs_srs[0])
        assert pacs_seg.SegmentationType == "BINARY"
        assert orthanc.find_instances_by_tag(StudyInstanceUID=study_uid, Modality="OT") == []
        assert _sr_referenced_seg(pacs_sr) == {str(pacs_seg.SOPInstanceUID)}

        received = [dcmread(p) for p in old_pacs.files()]
        by_modality: dict[str, list[Any]] = {}
        for ds in received:
            by_modality.setdefault(str(ds.Modality), []).append(ds)
        [old_seg], [old_sr] = by_modality["SEG"], by_modality["SR"]
        assert old_seg.SegmentationType == "FRACTIONAL"
        assert int(old_seg.NumberOfFrames) == len(chest_phantom.datasets) * len(
            old_seg.SegmentSequence
        )
        assert len(by_modality["OT"]) == len(
            chest_phantom.datasets
        )  # every slice as Secondary Capture
        assert _sr_referenced_seg(old_sr) == {str(old_seg.SOPInstanceUID)}
        assert old_seg.SOPInstanceUID != pacs_seg.SOPInstanceUID
        assert old_sr.SOPInstanceUID != pacs_sr.SOPInstanceUID

        # the audit record says which profile each output was written for
        full = node.store.get_job(job.id)
        variants = {(o.kind, o.variant) for o in full[0].outputs}
        assert ("SEG", "default") in variants and (
            "SEG",
            "fractional+all-frames+sc-all",
        ) in variants


def test_a_changed_profile_is_not_silently_sent_the_old_set(
    sqlite_url: str, make_node: Callable[..., Any], chest_phantom: Any, tmp_path: Path
) -> None:
    """Results written for one profile are not delivered to a destination now set to another."""
    with peers.StoreSCP("PACS") as scp:
        destination = {"dimse": {"ae_title": scp.aet, "host": "127.0.0.1", "port": scp.port}}
        routes = [
            {
                "name": "ct",
                "match": {"Modality": "CT"},
                "pipelines": ["ct-anatomy"],
                "send_to": ["pacs"],
            }
        ]
        node = make_node(sqlite_url, destinations={"pacs": destination}, routes=routes)
        peers.storescu(
            "127.0.0.1",
            node.dicom_port,
            "AINODE",
            _saved(tmp_path, chest_phantom.datasets[:24]),
            calling_aet="MODALITY",
            check=True,
        )
        job = peers.wait_for(
            lambda: next(
                (j for j in node.store.list_jobs() if j.state is JobState.DELIVERED), None
            ),
            timeout=120,
            what="the first delivery",
        )
        node.stop()
        changed = destination | {"profile": {"seg_type": "fractional"}}
        node = make_node(sqlite_url, destinations={"pacs": changed}, routes=routes)
        node.actions.resend(job.id, [])
        node.wake("egress")
        failed = peers.wait_for(
            lambda: next(
                (d for d in node.store.get_job(job.id)[1] if d.state is DeliveryState.FAILED), None
            ),
            timeout=30,
            what="the re-send refused",
        )
        assert "re-run the job" in (failed.last_error or "")
        assert "'fractional'" in (failed.last_error or "")


def _saved(directory: Path, datasets: list[Any]) -> list[Path]:
    """Files holding ``datasets``, to send with storescu."""
    paths = []
    for ds in datasets:
        path = directory / "send" / f"{ds.SOPInstanceUID}.dcm"
        path.parent.mkdir(exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
