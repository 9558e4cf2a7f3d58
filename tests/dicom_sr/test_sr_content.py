"""SR content beyond measurements: classifications, detections, outlines, priors, library."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest

from dicom_sr.seg import write_segmentation
from dicom_sr.sr import write_measurement_report
from tests.dicom_sr.test_air_conformance import rich_findings


@pytest.fixture
def report(
    tmp_path, dciodvfy, ct_series, build_findings, seg_identity, sr_identity, device, algorithm
):
    findings = rich_findings(build_findings(ct_series))
    seg = write_segmentation(ct_series, findings, seg_identity, device, algorithm)
    dataset = write_measurement_report(ct_series, findings, seg, sr_identity, device, algorithm)
    assert dciodvfy(dataset, tmp_path / "sr.dcm") == []
    sr = hd.sr.srread(tmp_path / "sr.dcm")
    return findings, sr, hd.sr.MeasurementReport.from_sequence(sr.content)


def _items(content, code_value):
    found = []
    for item in content:
        if item.ConceptNameCodeSequence[0].CodeValue == code_value:
            found.append(item)
        found += _items(item.get("ContentSequence", []), code_value)
    return found


def test_segment_classification_with_probability(report):
    _, _, measurement_report = report
    (lesion,) = [
        g
        for g in measurement_report.get_volumetric_roi_measurement_groups()
        if g.referenced_segment.referenced_segment_numbers == [3]
    ]
    evaluations = _items(lesion[0].ContentSequence, "404684003")
    assert [e.ConceptCodeSequence[0].CodeValue for e in evaluations] == ["27925004"]
    (probability,) = _items(evaluations[0].ContentSequence, "122157")
    assert probability.MeasuredValueSequence[0].NumericValue == pytest.approx(0.6)
    assert probability.RelationshipType == "HAS PROPERTIES"


def test_series_classification(report):
    _, _, measurement_report = report
    (group, _prior) = measurement_report.get_image_measurement_groups()
    (evaluation,) = _items(group[0].ContentSequence, "404684003")
    assert evaluation.ConceptCodeSequence[0].CodeValue == "36118008"
    (probability,) = _items(evaluation.ContentSequence, "122157")
    assert probability.MeasuredValueSequence[0].NumericValue == pytest.approx(0.87)


def test_every_segment_has_a_drawable_outline(report, ct_series):
    findings, _, measurement_report = report
    outlines = [
        g
        for g in measurement_report.get_planar_roi_measurement_groups()
        if g.tracking_identifier.endswith(" outline")
    ]
    assert len(outlines) == len(findings.segments)
    for group, segment in zip(outlines, findings.segments, strict=True):
        roi = group.roi
        assert roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        data = roi.value
        np.testing.assert_array_equal(data[0], data[-1])  # closed
        areas = segment.mask.reshape(len(ct_series), -1).sum(axis=1)
        key = int(np.argmax(areas))
        (source,) = roi.ContentSequence[0].ReferencedSOPSequence
        assert source.ReferencedSOPInstanceUID == ct_series[key].SOPInstanceUID
        columns, rows = (data[:, 0] - 0.5).astype(int), (data[:, 1] - 0.5).astype(int)
        assert segment.mask[key, rows, columns].all()  # the outline runs on the segment


def test_detection_box_in_patient_coordinates(report, ct_series):
    _, _, measurement_report = report
    (group,) = [
        g
        for g in measurement_report.get_planar_roi_measurement_groups()
        if g.tracking_identifier == "nodule-1"
    ]
    roi = group.roi
    assert roi.graphic_type == hd.sr.GraphicTypeValues3D.POLYGON
    assert roi.ReferencedFrameOfReferenceUID == ct_series[0].FrameOfReferenceUID
    corners = roi.value
    # box frames 4..6, rows 20..29, columns 10..21 -> centre frame 5, pixel edges
    z = float(ct_series[5].ImagePositionPatient[2])
    x0, y0 = -40.0 + 1.25 * (10 - 0.5), -40.0 + 1.25 * (20 - 0.5)
    x1, y1 = -40.0 + 1.25 * (22 - 0.5), -40.0 + 1.25 * (30 - 0.5)
    np.testing.assert_allclose(
        corners, [[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z], [x0, y0, z]], atol=1e-4
    )
    (score,) = group.get_measurements()
    assert score.name.value == "111012" and score.value == pytest.approx(0.9)
    assert group.finding_type.value == "27925004"


def test_prior_study_is_referenced(report):
    findings, _, measurement_report = report
    (_series, prior) = measurement_report.get_image_measurement_groups()
    registration = findings.registrations[0]
    assert prior.tracking_identifier == "comparison with prior study"
    uids = {
        item.ConceptNameCodeSequence[0].CodeValue: item.UID
        for item in prior[0].ContentSequence
        if item.ValueType == "UIDREF"
    }
    uids.pop("112040")  # the group's Tracking UID
    assert uids == {
        "110180": registration.prior_study_instance_uid,
        "112002": registration.prior_series_instance_uid,
        "112227": registration.prior_frame_of_reference_uid,
    }


def test_image_library_lists_the_outline_images(report, ct_series):
    findings, sr, _ = report
    (library,) = _items(sr.ContentSequence, "111028")  # Image Library
    uids = [
        ref.ReferencedSOPInstanceUID
        for item in _items(library.ContentSequence, "126200")
        for entry in item.ContentSequence
        if "ReferencedSOPSequence" in entry
        for ref in entry.ReferencedSOPSequence
    ]
    keys = sorted(
        {int(np.argmax(s.mask.reshape(len(ct_series), -1).sum(axis=1))) for s in findings.segments}
    )
    assert uids == [ct_series[k].SOPInstanceUID for k in keys]
