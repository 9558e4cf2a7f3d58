"""Round-trip tests of dicom_sr.sr.write_measurement_report."""

from __future__ import annotations

import dataclasses

import highdicom as hd
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage, generate_uid

from dicom_sr import EncodingError, SourceImagesError
from dicom_sr.seg import write_segmentation
from dicom_sr.sr import write_measurement_report

COPIED = (
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
)


def _text_values(content_sequence, code_value):
    return [
        item.TextValue
        for item in content_sequence
        if item.ConceptNameCodeSequence[0].CodeValue == code_value
    ]


def _write_both(ct_series, findings, seg_identity, sr_identity, device, algorithm):
    seg = write_segmentation(ct_series, findings, seg_identity, device, algorithm)
    sr = write_measurement_report(ct_series, findings, seg, sr_identity, device, algorithm)
    return seg, sr


def _read_report(tmp_path, dciodvfy, dataset):
    path = tmp_path / "sr.dcm"
    warnings = dciodvfy(dataset, path)
    sr = hd.sr.srread(path)
    return sr, hd.sr.MeasurementReport.from_sequence(sr.content), warnings


def _assert_measurements(group, expected):
    measurements = group.get_measurements()
    assert len(measurements) == len(expected)
    for got, want in zip(measurements, expected, strict=True):
        assert got.name.value == want.concept.value
        assert got.value == pytest.approx(want.value)
        assert (got.unit.value, got.unit.scheme_designator) == (want.unit.value, "UCUM")
        if want.derivation is None:
            assert got.derivation is None
        else:
            assert got.derivation.value == want.derivation.value
        content = got[0].ContentSequence
        assert _text_values(content, "111001") == ["ct-anatomy"]  # Algorithm Name
        assert _text_values(content, "111003") == ["1.2.0"]  # Algorithm Version
        assert _text_values(content, "111002") == [
            "spacing=1.5mm",
            "model_checksum=sha256:0123abcd",
        ]


def test_report_round_trip(
    tmp_path, dciodvfy, ct_series, build_findings, seg_identity, sr_identity, device, algorithm
):
    findings = build_findings(ct_series)
    seg, dataset = _write_both(ct_series, findings, seg_identity, sr_identity, device, algorithm)
    sr, _, warnings = _read_report(tmp_path, dciodvfy, dataset)
    assert warnings == []

    source = ct_series[0]
    assert sr.SOPClassUID == Comprehensive3DSRStorage
    for keyword in COPIED:
        assert sr.get(keyword) == source.get(keyword), keyword
    assert (sr.SeriesInstanceUID, sr.SOPInstanceUID) == (
        sr_identity.series_instance_uid,
        sr_identity.sop_instance_uid,
    )
    assert sr.SeriesNumber == 902
    assert sr.SeriesDescription == sr_identity.series_description
    assert (sr.Manufacturer, sr.ManufacturerModelName) == ("ainode project", "ainode")
    assert (sr.SoftwareVersions, sr.DeviceSerialNumber) == ("0.1.0", "node-0001")
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "UNVERIFIED")

    evidence = {
        item.SeriesInstanceUID: [r.ReferencedSOPInstanceUID for r in item.ReferencedSOPSequence]
        for item in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    }
    assert evidence == {
        source.SeriesInstanceUID: list(findings.source_sop_instance_uids),
        seg.SeriesInstanceUID: [seg.SOPInstanceUID],
    }
    assert "PertinentOtherEvidenceSequence" not in sr

    procedure = [
        item.ConceptCodeSequence[0]
        for item in sr.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "121058"  # Procedure reported
    ]
    assert [(p.CodeValue, p.CodingSchemeDesignator) for p in procedure] == [("25045-6", "LN")]


def test_observer_is_the_node(
    tmp_path, dciodvfy, ct_series, build_findings, seg_identity, sr_identity, device, algorithm
):
    findings = build_findings(ct_series)
    _, dataset = _write_both(ct_series, findings, seg_identity, sr_identity, device, algorithm)
    _, report, _ = _read_report(tmp_path, dciodvfy, dataset)
    observers = report.get_observer_contexts(observer_type=codes.DCM.Device)
    assert len(observers) == 1
    attributes = observers[0].observer_identifying_attributes
    assert attributes.uid == device.observer_uid
    assert attributes.name == "AINODE1"
    assert attributes.manufacturer_name == "ainode project"
    assert attributes.model_name == "ainode"
    assert attributes.serial_number == "node-0001"


def test_segment_groups_reference_the_seg(
    tmp_path, dciodvfy, ct_series, build_findings, seg_identity, sr_identity, device, algorithm
):
    findings = build_findings(ct_series)
    seg, dataset = _write_both(ct_series, findings, seg_identity, sr_identity, device, algorithm)
    _, report, _ = _read_report(tmp_path, dciodvfy, dataset)

    groups = report.get_volumetric_roi_measurement_groups()
    # every segment of the SEG has a group; segment 3 (lesion) has no measurements
    assert [g.referenced_segment.referenced_segment_numbers for g in groups] == [[1], [2], [3]]
    for group in groups:
        number = group.referenced_segment.referenced_segment_numbers[0]
        description = findings.segment(number).description
        seg_item = seg.SegmentSequence[number - 1]
        assert group.reference_type == codes.DCM.ReferencedSegment
        assert group.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert group.referenced_segment.referenced_sop_class_uid == seg.SOPClassUID
        source_series = group.referenced_segment.source_series_for_segmentation
        assert source_series.value == ct_series[0].SeriesInstanceUID
        assert group.tracking_identifier == description.tracking_id == seg_item.TrackingID
        assert group.tracking_uid == seg_item.TrackingUID
        assert group.finding_type.value == description.property_type.value
        assert group.finding_category.value == description.category.value
        _assert_measurements(
            group, [m for m in findings.measurements if m.segment_number == number]
        )


def test_series_measurements_group(
    tmp_path, dciodvfy, ct_series, build_findings, seg_identity, sr_identity, device, algorithm
):
    findings = build_findings(ct_series)
    _, dataset = _write_both(ct_series, findings, seg_identity, sr_identity, device, algorithm)
    _, report, _ = _read_report(tmp_path, dciodvfy, dataset)
    (group,) = report.get_image_measurement_groups()
    assert group.tracking_identifier == "ct-anatomy series measurements"
    assert hd.UID(group.tracking_uid).is_valid
    assert [s.referenced_sop_instance_uid for s in group.source_images] == list(
        findings.source_sop_instance_uids
    )
    _assert_measurements(group, [m for m in findings.measurements if m.segment_number is None])


def test_finding_site_from_anatomic_region(
    tmp_path, dciodvfy, ct_series, build_findings, seg_identity, sr_identity, device, algorithm
):
    findings = build_findings(ct_series)
    lesion_volume = dataclasses.replace(findings.measurements[0], value=0.12, segment_number=3)
    findings = dataclasses.replace(findings, measurements=(lesion_volume,))
    _, dataset = _write_both(ct_series, findings, seg_identity, sr_identity, device, algorithm)
    _, report, _ = _read_report(tmp_path, dciodvfy, dataset)
    (group,) = [
        g
        for g in report.get_volumetric_roi_measurement_groups()
        if g.referenced_segment.referenced_segment_numbers == [3]
    ]
    assert [s.value.value for s in group.finding_sites] == ["39607008"]
    assert len(group.get_measurements()) == 1
    assert report.get_image_measurement_groups() == []


def test_single_segment_seg(
    tmp_path, dciodvfy, ct_series, build_findings, seg_identity, sr_identity, device, algorithm
):
    """highdicom's ReferencedSegment.from_segmentation fails on this SEG; ours must not."""
    findings = build_findings(ct_series, n_segments=1, series_measurement=False)
    seg, dataset = _write_both(ct_series, findings, seg_identity, sr_identity, device, algorithm)
    assert "SegmentIdentificationSequence" in seg.SharedFunctionalGroupsSequence[0]
    _, report, _ = _read_report(tmp_path, dciodvfy, dataset)
    (group,) = report.get_volumetric_roi_measurement_groups()
    assert group.referenced_segment.referenced_segment_numbers == [1]
    assert group.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID


def test_real_ct_slice(
    tmp_path, dciodvfy, ct_small, build_findings, seg_identity, sr_identity, device, algorithm
):
    findings = build_findings(ct_small)
    _, dataset = _write_both(ct_small, findings, seg_identity, sr_identity, device, algorithm)
    sr, report, warnings = _read_report(tmp_path, dciodvfy, dataset)
    # the only warnings are those of the copied Patient module (Patient's Weight 0)
    assert set(warnings) <= set(dciodvfy(ct_small[0], tmp_path / "source.dcm"))
    assert sr.StudyInstanceUID == ct_small[0].StudyInstanceUID
    assert len(report.get_volumetric_roi_measurement_groups()) == 3


def test_series_measurements_without_segmentation(
    tmp_path, dciodvfy, ct_series, build_findings, sr_identity, device, algorithm
):
    findings = build_findings(ct_series)
    findings = dataclasses.replace(
        findings,
        segments=(),
        measurements=tuple(m for m in findings.measurements if m.segment_number is None),
    )
    dataset = write_measurement_report(ct_series, findings, None, sr_identity, device, algorithm)
    _, report, _ = _read_report(tmp_path, dciodvfy, dataset)
    assert report.get_volumetric_roi_measurement_groups() == []
    assert len(report.get_image_measurement_groups()) == 1


def test_segment_measurements_need_the_seg(
    ct_series, build_findings, sr_identity, device, algorithm
):
    findings = build_findings(ct_series)
    with pytest.raises(EncodingError, match="no segmentation"):
        write_measurement_report(ct_series, findings, None, sr_identity, device, algorithm)


def test_rejects_seg_of_other_source(
    ct_series, build_findings, seg_identity, sr_identity, device, algorithm
):
    findings = build_findings(ct_series)
    seg = write_segmentation(ct_series, findings, seg_identity, device, algorithm)
    seg.ReferencedSeriesSequence[0].SeriesInstanceUID = generate_uid()
    with pytest.raises(SourceImagesError, match="source series"):
        write_measurement_report(ct_series, findings, seg, sr_identity, device, algorithm)
    seg.StudyInstanceUID = generate_uid()
    with pytest.raises(SourceImagesError, match="another study"):
        write_measurement_report(ct_series, findings, seg, sr_identity, device, algorithm)


def test_rejects_seg_without_the_segment(
    ct_series, build_findings, seg_identity, sr_identity, device, algorithm
):
    findings = build_findings(ct_series)
    one_segment = build_findings(ct_series, n_segments=1)
    seg = write_segmentation(ct_series, one_segment, seg_identity, device, algorithm)
    with pytest.raises(EncodingError, match="not in the segmentation"):
        write_measurement_report(ct_series, findings, seg, sr_identity, device, algorithm)


def test_mismatched_source_order_raises(
    ct_series, build_findings, seg_identity, sr_identity, device, algorithm
):
    findings = build_findings(ct_series)
    seg = write_segmentation(ct_series, findings, seg_identity, device, algorithm)
    with pytest.raises(SourceImagesError, match="frame order"):
        write_measurement_report(ct_series[::-1], findings, seg, sr_identity, device, algorithm)


def test_no_measurements_raises(ct_series, build_findings, sr_identity, device, algorithm):
    findings = dataclasses.replace(build_findings(ct_series), measurements=())
    with pytest.raises(EncodingError, match="no measurements"):
        write_measurement_report(ct_series, findings, None, sr_identity, device, algorithm)
