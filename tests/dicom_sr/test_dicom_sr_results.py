"""Tests of dicom_sr.write_results: which objects one findings produces."""

from __future__ import annotations

import dataclasses

import highdicom as hd
import pytest
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from dicom_sr import IdentityError, write_results


def test_segments_and_measurements_give_seg_then_sr(
    tmp_path, dciodvfy, ct_series, build_findings, seg_identity, sr_identity, device, algorithm
):
    findings = build_findings(ct_series)
    seg, sr = write_results(ct_series, findings, seg_identity, sr_identity, device, algorithm)
    assert seg.SOPClassUID == SegmentationStorage
    assert sr.SOPClassUID == Comprehensive3DSRStorage
    assert dciodvfy(seg, tmp_path / "seg.dcm") == []
    assert dciodvfy(sr, tmp_path / "sr.dcm") == []
    report = hd.sr.MeasurementReport.from_sequence(hd.sr.srread(tmp_path / "sr.dcm").content)
    groups = report.get_volumetric_roi_measurement_groups()
    assert {g.referenced_segment.referenced_sop_instance_uid for g in groups} == {
        seg_identity.sop_instance_uid
    }
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == ct_series[0].StudyInstanceUID


def test_segments_only_give_seg(
    ct_series, build_findings, seg_identity, sr_identity, device, algorithm
):
    findings = dataclasses.replace(build_findings(ct_series), measurements=())
    (seg,) = write_results(ct_series, findings, seg_identity, sr_identity, device, algorithm)
    assert seg.SOPInstanceUID == seg_identity.sop_instance_uid


def test_measurements_only_give_sr(
    ct_series, build_findings, seg_identity, sr_identity, device, algorithm
):
    findings = build_findings(ct_series)
    findings = dataclasses.replace(
        findings,
        segments=(),
        measurements=tuple(m for m in findings.measurements if m.segment_number is None),
    )
    (sr,) = write_results(ct_series, findings, seg_identity, sr_identity, device, algorithm)
    assert sr.SOPInstanceUID == sr_identity.sop_instance_uid


def test_nothing_gives_nothing(
    ct_series, build_findings, seg_identity, sr_identity, device, algorithm
):
    findings = dataclasses.replace(build_findings(ct_series), segments=(), measurements=())
    assert write_results(ct_series, findings, seg_identity, sr_identity, device, algorithm) == ()


def test_seg_and_sr_need_their_own_uids(ct_series, build_findings, seg_identity, device, algorithm):
    findings = build_findings(ct_series)
    with pytest.raises(IdentityError, match="own series"):
        write_results(ct_series, findings, seg_identity, seg_identity, device, algorithm)
