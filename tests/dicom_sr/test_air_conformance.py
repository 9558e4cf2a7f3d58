"""IHE AIR conformance of every result object: equipment, patient/study, SEG geometry."""

from __future__ import annotations

import dataclasses

import highdicom as hd
import numpy as np
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from dicom_sr import (
    AlgorithmIdentity,
    ResultIdentity,
    SegmentationType,
    ViewerProfile,
    algorithm_device_uid,
    write_results,
)
from dicom_sr.seg import write_segmentation
from dicom_sr.sources import PATIENT_AND_STUDY_KEYWORDS
from pipelines.findings import Classification, Code, Detection, Registration

FORMATS = ("seg", "sr", "sc", "pdf", "ko")
FINDING = Code("404684003", "SCT", "Clinical finding")
PNEUMOTHORAX = Code("36118008", "SCT", "Pneumothorax")
NODULE = Code("27925004", "SCT", "Nodule")


def identity(number: int) -> ResultIdentity:
    return ResultIdentity(
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        series_number=number,
        series_description=f"ainode result {number}",
    )


def rich_findings(findings):
    """Add classifications, a detection and a registration to the test findings."""
    return dataclasses.replace(
        findings,
        classifications=(
            Classification(FINDING, PNEUMOTHORAX, probability=0.87),
            Classification(FINDING, NODULE, probability=0.6, segment_number=3),
        ),
        detections=(Detection(NODULE, 0.9, (4, 20, 10), (7, 30, 22), "nodule-1", "Nodule 1"),),
        registrations=(
            Registration(generate_uid(), generate_uid(), generate_uid(), tuple(np.eye(4).tolist())),
        ),
    )


@pytest.fixture
def all_results(ct_series, build_findings, device, algorithm):
    findings = rich_findings(build_findings(ct_series))
    identities = {name: identity(900 + i) for i, name in enumerate(FORMATS)}
    results = write_results(
        ct_series,
        findings,
        device=device,
        algorithm=algorithm,
        formats=FORMATS,
        identities=identities,
    )
    return findings, identities, results


def test_every_format_is_written_and_dciodvfy_clean(tmp_path, dciodvfy, all_results):
    _, identities, results = all_results
    modalities = [str(ds.Modality) for ds in results]
    assert modalities[:2] == ["SEG", "SR"]
    assert modalities[-2:] == ["DOC", "KO"]
    assert set(modalities[2:-2]) == {"OT"}
    for index, ds in enumerate(results):
        warnings = dciodvfy(ds, tmp_path / f"{index}.dcm")
        laterality = [w for w in warnings if "<Laterality>" in w]  # SC: unknown laterality
        assert not set(warnings) - set(laterality), (ds.Modality, warnings)
    by_kind = {"SEG": "seg", "SR": "sr", "OT": "sc", "DOC": "pdf", "KO": "ko"}
    for ds in results:
        wanted = identities[by_kind[str(ds.Modality)]]
        assert ds.SeriesInstanceUID == wanted.series_instance_uid
        assert ds.SeriesNumber == wanted.series_number
        assert ds.SeriesDescription == wanted.series_description


def test_algorithm_is_contributing_equipment(all_results, device, algorithm):
    _, _, results = all_results
    for ds in results:
        # highdicom adds the source's acquisition equipment and itself; ours is one item
        (item,) = [i for i in ds.ContributingEquipmentSequence if "DeviceUID" in i]
        assert item.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
        assert item.PurposeOfReferenceCodeSequence[0].CodingSchemeDesignator == "DCM"
        assert codes.DCM.ProcessingEquipment.value == "109102"
        assert item.Manufacturer == algorithm.source
        assert item.ManufacturerModelName == algorithm.name
        assert item.SoftwareVersions == algorithm.version
        assert item.DeviceUID == algorithm_device_uid(algorithm)
        assert ds.Manufacturer == device.manufacturer  # the node is the equipment


def test_device_uid_changes_with_the_model(algorithm):
    same = AlgorithmIdentity(
        name=algorithm.name, version=algorithm.version, model_checksum=algorithm.model_checksum
    )
    assert algorithm_device_uid(same) == algorithm_device_uid(algorithm)
    for change in ({"version": "9.9.9"}, {"model_checksum": "sha256:ffff"}, {"name": "other"}):
        other = dataclasses.replace(algorithm, **change)
        assert algorithm_device_uid(other) != algorithm_device_uid(algorithm)
    assert hd.UID(algorithm_device_uid(algorithm)).startswith("2.25.")


def test_patient_and_study_copied_exactly(ct_series, build_findings, device, algorithm):
    source = ct_series[0]
    for series_image in ct_series:  # attributes highdicom would not copy by itself
        series_image.OtherPatientNames = "Alias^Test"
        series_image.PatientAge = "054Y"
        series_image.PatientWeight = "71.5"
        series_image.PatientComments = "comment"
        series_image.IssuerOfPatientID = "HOSP"
        series_image.PhysiciansOfRecord = "Doctor^Who"
    findings = rich_findings(build_findings(ct_series))
    results = write_results(
        ct_series,
        findings,
        device=device,
        algorithm=algorithm,
        formats=FORMATS,
        identities={name: identity(900 + i) for i, name in enumerate(FORMATS)},
    )
    present = [k for k in PATIENT_AND_STUDY_KEYWORDS if k in source]
    assert "PatientAge" in present and "StudyDescription" in present
    for ds in results:
        for keyword in present:
            assert ds[keyword].value == source[keyword].value, (ds.Modality, keyword)
        ds.PatientName = "Changed^Name"
    assert source.PatientName == "Test^Patient"  # results do not alias the source


def test_seg_frames_match_source_geometry(
    tmp_path, dciodvfy, ct_series, build_findings, seg_identity, device, algorithm
):
    findings = build_findings(ct_series)
    for omit in (True, False):
        profile = ViewerProfile(omit_empty_frames=omit)
        seg = write_segmentation(
            ct_series, findings, seg_identity, device, algorithm, profile=profile
        )
        by_uid = {str(ds.SOPInstanceUID): ds for ds in ct_series}
        (series,) = seg.ReferencedSeriesSequence
        assert series.SeriesInstanceUID == ct_series[0].SeriesInstanceUID
        assert {i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence} == set(
            by_uid
        )
        for frame in seg.PerFrameFunctionalGroupsSequence:
            (derivation,) = frame.DerivationImageSequence
            (source_item,) = derivation.SourceImageSequence
            source = by_uid[source_item.ReferencedSOPInstanceUID]
            position = frame.PlanePositionSequence[0].ImagePositionPatient
            np.testing.assert_allclose(
                [float(v) for v in position], [float(v) for v in source.ImagePositionPatient]
            )
        shared = seg.SharedFunctionalGroupsSequence[0]
        assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [1.25, 1.25]
        assert list(shared.PlaneOrientationSequence[0].ImageOrientationPatient) == list(
            ct_series[0].ImageOrientationPatient
        )
        n_frames = int(seg.NumberOfFrames)
        assert (n_frames < 36) if omit else (n_frames == 36)
        dciodvfy(seg, tmp_path / f"seg-{omit}.dcm")


def test_recommended_display_colours_are_cielab(
    ct_series, build_findings, seg_identity, device, algorithm
):
    findings = build_findings(ct_series)
    seg = write_segmentation(ct_series, findings, seg_identity, device, algorithm)
    for item, segment in zip(seg.SegmentSequence, findings.segments, strict=True):
        expected = hd.color.CIELabColor.from_rgb(*segment.description.color_rgb).value
        assert tuple(item.RecommendedDisplayCIELabValue) == tuple(expected)


@pytest.mark.parametrize("kind", [SegmentationType.LABELMAP, SegmentationType.FRACTIONAL])
def test_other_segmentation_types(
    tmp_path, ct_series, build_findings, seg_identity, device, algorithm, kind
):
    base = build_findings(ct_series)
    lungs, lesion = base.segments[1], base.segments[2]
    moved = np.zeros_like(lesion.mask)
    moved[5:7, 29:34, 30:34] = True  # between the lungs: disjoint segments
    findings = dataclasses.replace(
        base,
        segments=(
            dataclasses.replace(
                lungs, description=dataclasses.replace(lungs.description, number=1)
            ),
            dataclasses.replace(
                lesion, mask=moved, description=dataclasses.replace(lesion.description, number=2)
            ),
        ),
        measurements=(),
    )
    seg = write_segmentation(
        ct_series,
        findings,
        seg_identity,
        device,
        algorithm,
        profile=ViewerProfile(segmentation_type=kind),
    )
    assert seg.SegmentationType == kind.value
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    back = hd.seg.segread(path)
    for segment in findings.segments:
        pixels = back.get_pixels_by_source_instance(
            source_sop_instance_uids=findings.source_sop_instance_uids,
            segment_numbers=[segment.description.number],
        )
        np.testing.assert_array_equal(pixels[..., 0] > 0, segment.mask)


def test_multiframe_source(
    tmp_path, dciodvfy, ct_series, build_findings, seg_identity, sr_identity, device, algorithm
):
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=ct_series,
        series_instance_uid=generate_uid(),
        series_number=3,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    reverse = list(range(len(ct_series), 0, -1))  # findings frame i is source frame n - i
    base = build_findings(ct_series)
    findings = dataclasses.replace(
        base,
        source_sop_instance_uids=(str(enhanced.SOPInstanceUID),) * len(ct_series),
        source_frame_numbers=tuple(reverse),
        segments=tuple(dataclasses.replace(s, mask=s.mask[::-1].copy()) for s in base.segments),
    )
    seg, sr = write_results([enhanced], findings, seg_identity, sr_identity, device, algorithm)
    dciodvfy(seg, tmp_path / "seg.dcm")
    dciodvfy(sr, tmp_path / "sr.dcm")
    back = hd.seg.segread(tmp_path / "seg.dcm")
    for segment in base.segments:  # in the source's own frame order: the original masks
        pixels = back.get_pixels_by_source_frame(
            source_sop_instance_uid=str(enhanced.SOPInstanceUID),
            source_frame_numbers=list(range(1, len(ct_series) + 1)),
            segment_numbers=[segment.description.number],
        )
        np.testing.assert_array_equal(pixels[..., 0].astype(bool), segment.mask)
