"""Round-trip tests of dicom_sr.seg.write_segmentation."""

from __future__ import annotations

import dataclasses

import highdicom as hd
import numpy as np
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless, SegmentationStorage

from dicom_sr import EncodingError, IdentityError, SourceImagesError
from dicom_sr.seg import write_segmentation
from pipelines.errors import AinodeError
from pipelines.findings import Findings, Segment

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
    "FrameOfReferenceUID",
)


def _round_trip(tmp_path, dciodvfy, dataset):
    path = tmp_path / "seg.dcm"
    warnings = dciodvfy(dataset, path)
    return hd.seg.segread(path), warnings


def _assert_masks_equal(seg, findings):
    uids = findings.source_sop_instance_uids
    for segment in findings.segments:
        number = segment.description.number
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, segment_numbers=[number]
        )
        assert pixels.shape == (len(uids), *segment.mask.shape[1:], 1)
        np.testing.assert_array_equal(pixels[..., 0].astype(bool), segment.mask)


def test_segmentation_round_trip(
    tmp_path, dciodvfy, ct_series, build_findings, seg_identity, device, algorithm
):
    findings = build_findings(ct_series)
    dataset = write_segmentation(ct_series, findings, seg_identity, device, algorithm)
    seg, warnings = _round_trip(tmp_path, dciodvfy, dataset)
    assert warnings == []

    source = ct_series[0]
    assert seg.SOPClassUID == SegmentationStorage
    assert seg.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert seg.Modality == "SEG"
    assert seg.SegmentationType == "BINARY"
    for keyword in COPIED:
        assert seg.get(keyword) == source.get(keyword), keyword
    assert seg.SeriesInstanceUID == seg_identity.series_instance_uid
    assert seg.SOPInstanceUID == seg_identity.sop_instance_uid
    assert seg.SeriesNumber == 901
    assert seg.InstanceNumber == 1
    assert seg.SeriesDescription == seg_identity.series_description
    assert seg.ContentDescription == seg_identity.series_description
    assert seg.Manufacturer == "ainode project"
    assert seg.ManufacturerModelName == "ainode"
    assert seg.SoftwareVersions == "0.1.0"
    assert seg.DeviceSerialNumber == "node-0001"
    assert seg.InstitutionName == "Test Hospital"
    assert seg.ContentQualification == "RESEARCH"

    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence] == list(
        findings.source_sop_instance_uids
    )
    _assert_masks_equal(seg, findings)
    # empty frames omitted: one frame per (segment, source image) holding the segment
    expected_frames = sum(int(s.mask.any(axis=(1, 2)).sum()) for s in findings.segments)
    assert seg.NumberOfFrames == expected_frames < len(ct_series) * len(findings.segments)


def test_segment_descriptions(
    tmp_path, dciodvfy, ct_series, build_findings, seg_identity, device, algorithm
):
    findings = build_findings(ct_series)
    seg, _ = _round_trip(
        tmp_path, dciodvfy, write_segmentation(ct_series, findings, seg_identity, device, algorithm)
    )
    assert seg.segment_numbers == [1, 2, 3]
    tracking_uids = set()
    for segment in findings.segments:
        expected = segment.description
        item = seg.get_segment_description(expected.number)
        assert item.segment_label == expected.label
        assert item.segmented_property_category.value == expected.category.value
        assert item.segmented_property_category.scheme_designator == expected.category.scheme
        assert item.segmented_property_type.value == expected.property_type.value
        assert item.segmented_property_type.meaning == expected.property_type.meaning
        assert item.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        assert item.tracking_id == expected.tracking_id
        assert hd.UID(item.tracking_uid).is_valid
        tracking_uids.add(item.tracking_uid)
        regions = [r.value for r in item.anatomic_regions]
        assert regions == ([expected.anatomic_region.value] if expected.anatomic_region else [])
        rgb = hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb()
        assert np.allclose(rgb, expected.color_rgb, atol=1)
        identification = item.algorithm_identification[0]
        assert identification.AlgorithmName == "ct-anatomy"
        assert identification.AlgorithmVersion == "1.2.0"
        assert identification.AlgorithmSource == "ainode project"
        assert identification.AlgorithmParameters == "spacing=1.5mm,model_checksum=sha256:0123abcd"
        family = identification.AlgorithmFamilyCodeSequence[0]
        assert (family.CodeValue, family.CodingSchemeDesignator) == ("123110", "DCM")
    assert len(tracking_uids) == 3


def test_overlapping_segments(
    tmp_path, dciodvfy, ct_series, build_findings, seg_identity, device, algorithm
):
    findings = build_findings(ct_series)  # the body contains the lungs
    seg, _ = _round_trip(
        tmp_path, dciodvfy, write_segmentation(ct_series, findings, seg_identity, device, algorithm)
    )
    assert seg.SegmentsOverlap == "YES"
    _assert_masks_equal(seg, findings)


def test_disjoint_segments(
    tmp_path, dciodvfy, ct_series, build_findings, seg_identity, device, algorithm
):
    findings = build_findings(ct_series)
    body, lungs, lesion = (s.mask for s in findings.segments)
    disjoint = (body & ~lungs & ~lesion, lungs & ~lesion, lesion)
    findings = dataclasses.replace(
        findings,
        segments=tuple(
            Segment(s.description, m) for s, m in zip(findings.segments, disjoint, strict=True)
        ),
    )
    seg, warnings = _round_trip(
        tmp_path, dciodvfy, write_segmentation(ct_series, findings, seg_identity, device, algorithm)
    )
    assert warnings == []
    assert seg.SegmentsOverlap == "NO"
    _assert_masks_equal(seg, findings)


def test_single_segment(
    tmp_path, dciodvfy, ct_series, build_findings, seg_identity, device, algorithm
):
    findings = build_findings(ct_series, n_segments=1)
    seg, _ = _round_trip(
        tmp_path, dciodvfy, write_segmentation(ct_series, findings, seg_identity, device, algorithm)
    )
    assert seg.segment_numbers == [1]
    # highdicom puts a lone segment's number in the shared functional groups
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert shared.SegmentIdentificationSequence[0].ReferencedSegmentNumber == 1
    _assert_masks_equal(seg, findings)


def test_real_ct_slice(
    tmp_path, dciodvfy, ct_small, build_findings, seg_identity, device, algorithm
):
    findings = build_findings(ct_small, n_segments=3)
    seg, warnings = _round_trip(
        tmp_path, dciodvfy, write_segmentation(ct_small, findings, seg_identity, device, algorithm)
    )
    # the only warnings are those of the copied Patient module (Patient's Weight 0)
    assert set(warnings) <= set(dciodvfy(ct_small[0], tmp_path / "source.dcm"))
    assert seg.StudyInstanceUID == ct_small[0].StudyInstanceUID
    assert seg.PatientName == ct_small[0].PatientName
    _assert_masks_equal(seg, findings)


def test_jpeg2000_lossless(
    tmp_path, dciodvfy, ct_series, build_findings, seg_identity, device, algorithm
):
    findings = build_findings(ct_series)
    dataset = write_segmentation(
        ct_series, findings, seg_identity, device, algorithm, transfer_syntax_uid=JPEG2000Lossless
    )
    seg, _ = _round_trip(tmp_path, dciodvfy, dataset)
    assert seg.file_meta.TransferSyntaxUID == JPEG2000Lossless
    _assert_masks_equal(seg, findings)


def test_segment_entirely_empty(
    tmp_path, dciodvfy, ct_series, build_findings, seg_identity, device, algorithm
):
    findings = build_findings(ct_series)
    lesion = findings.segment(3)
    empty = Segment(lesion.description, np.zeros_like(lesion.mask))
    findings = dataclasses.replace(findings, segments=(*findings.segments[:2], empty))
    seg, _ = _round_trip(
        tmp_path, dciodvfy, write_segmentation(ct_series, findings, seg_identity, device, algorithm)
    )
    assert seg.segment_numbers == [1, 2, 3]
    _assert_masks_equal(seg, findings)


def test_all_segments_empty(
    tmp_path, dciodvfy, ct_series, build_findings, seg_identity, device, algorithm
):
    findings = build_findings(ct_series, n_segments=2)
    findings = dataclasses.replace(
        findings,
        segments=tuple(Segment(s.description, np.zeros_like(s.mask)) for s in findings.segments),
    )
    seg, warnings = _round_trip(
        tmp_path, dciodvfy, write_segmentation(ct_series, findings, seg_identity, device, algorithm)
    )
    assert warnings == []
    # highdicom cannot omit every frame, so it keeps them all
    assert seg.NumberOfFrames == len(ct_series) * 2
    _assert_masks_equal(seg, findings)


def test_result_does_not_alias_the_source(
    ct_series, build_findings, seg_identity, device, algorithm
):
    findings = build_findings(ct_series)
    seg = write_segmentation(ct_series, findings, seg_identity, device, algorithm)
    seg.PatientName = "Changed^Later"
    seg.StudyInstanceUID = hd.UID()
    assert ct_series[0].PatientName == "Test^Patient"
    assert ct_series[0].StudyInstanceUID == ct_series[1].StudyInstanceUID


def test_retry_writes_the_same_identifiers(
    ct_series, build_findings, seg_identity, device, algorithm
):
    findings = build_findings(ct_series)
    first = write_segmentation(ct_series, findings, seg_identity, device, algorithm)
    again = write_segmentation(ct_series, findings, seg_identity, device, algorithm)
    assert [s.TrackingUID for s in first.SegmentSequence] == [
        s.TrackingUID for s in again.SegmentSequence
    ]
    assert first.SOPInstanceUID == again.SOPInstanceUID
    assert first.PixelData == again.PixelData


def test_mismatched_source_order_raises(ct_series, build_findings, seg_identity, device, algorithm):
    findings = build_findings(ct_series)
    with pytest.raises(SourceImagesError, match="frame order") as caught:
        write_segmentation(ct_series[::-1], findings, seg_identity, device, algorithm)
    assert isinstance(caught.value, AinodeError)
    with pytest.raises(SourceImagesError, match="11 source images"):
        write_segmentation(ct_series[:-1], findings, seg_identity, device, algorithm)


def test_source_from_another_series_raises(
    ct_series, build_findings, seg_identity, device, algorithm
):
    findings = build_findings(ct_series)
    ct_series[3].SeriesInstanceUID = hd.UID()
    with pytest.raises(SourceImagesError, match="SeriesInstanceUID"):
        write_segmentation(ct_series, findings, seg_identity, device, algorithm)


def test_rejects_unencodable_findings(ct_series, build_findings, seg_identity, device, algorithm):
    findings = build_findings(ct_series, n_segments=2)
    lungs = findings.segment(2)
    gap = Segment(dataclasses.replace(lungs.description, number=3), lungs.mask)
    with pytest.raises(EncodingError, match="without gaps"):
        write_segmentation(
            ct_series,
            dataclasses.replace(findings, segments=(findings.segments[0], gap), measurements=()),
            seg_identity,
            device,
            algorithm,
        )
    with pytest.raises(EncodingError, match="no segments"):
        write_segmentation(
            ct_series,
            dataclasses.replace(findings, segments=(), measurements=()),
            seg_identity,
            device,
            algorithm,
        )
    with pytest.raises(EncodingError, match="transfer syntax"):
        write_segmentation(
            ct_series, findings, seg_identity, device, algorithm, transfer_syntax_uid=RLELossless
        )


def test_rejects_mask_of_other_matrix(ct_series, build_findings, seg_identity, device, algorithm):
    findings = build_findings(ct_series, n_segments=1)
    small = Segment(findings.segments[0].description, findings.segments[0].mask[:, :32, :])
    findings = Findings(
        findings.pipeline_name,
        findings.pipeline_version,
        findings.source_sop_instance_uids,
        segments=(small,),
    )
    with pytest.raises(EncodingError, match="shape"):
        write_segmentation(ct_series, findings, seg_identity, device, algorithm)


def test_rejects_other_algorithm(ct_series, build_findings, seg_identity, device, algorithm):
    findings = build_findings(ct_series)
    other = dataclasses.replace(algorithm, version="9.9")
    with pytest.raises(IdentityError, match="did not produce"):
        write_segmentation(ct_series, findings, seg_identity, device, other)
