"""Secondary Capture, PDF and KOS fallbacks: round trip and rendered pictures."""

from __future__ import annotations

import dataclasses

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicom_sr import ScFrames, write_key_object_selection, write_pdf_report, write_results
from dicom_sr.errors import EncodingError
from dicom_sr.kos import write_rejection_note
from dicom_sr.outline import boundary
from dicom_sr.pdf import render_pdf
from dicom_sr.sc import write_secondary_captures
from tests.dicom_sr.test_air_conformance import identity


def test_sc_key_slices_have_outlines(
    tmp_path, dciodvfy, ct_series, build_findings, device, algorithm
):
    findings = build_findings(ct_series)
    sc_identity = identity(950)
    images = write_secondary_captures(ct_series, findings, sc_identity, device, algorithm)
    keys = sorted(
        {int(np.argmax(s.mask.reshape(len(ct_series), -1).sum(axis=1))) for s in findings.segments}
    )
    assert len(images) == len(keys)
    assert images[0].SOPInstanceUID == sc_identity.sop_instance_uid
    assert [int(i.InstanceNumber) for i in images] == list(range(1, len(keys) + 1))
    for index, (image, frame) in enumerate(zip(images, keys, strict=True)):
        dciodvfy(image, tmp_path / f"sc{index}.dcm")
        back = pydicom.dcmread(tmp_path / f"sc{index}.dcm")
        assert list(back.ImageType) == ["DERIVED", "SECONDARY"]
        assert back.BurnedInAnnotation == "YES"
        assert "not for primary diagnosis" in back.ImageComments
        assert (
            back.SourceImageSequence[0].ReferencedSOPInstanceUID == ct_series[frame].SOPInstanceUID
        )
        pixels = back.pixel_array
        for segment in findings.segments:
            edge = boundary(segment.mask[frame])
            edge[:16] = False  # the legend covers the top rows
            colour = np.array(segment.description.color_rgb, dtype=np.uint8)
            if edge.any():
                on_edge = (pixels[edge] == colour).all(axis=1)
                assert on_edge.mean() > 0.5, segment.description.label
        grey = pixels[40:44, 30:34]  # inside the body, between the lungs
        assert (grey[..., 0] == grey[..., 1]).all()


def test_sc_every_slice(ct_series, build_findings, device, algorithm):
    findings = build_findings(ct_series)
    images = write_secondary_captures(
        ct_series, findings, identity(951), device, algorithm, frames=ScFrames.ALL
    )
    assert len(images) == len(ct_series)
    assert len({i.SOPInstanceUID for i in images}) == len(ct_series)


def test_pdf_report(tmp_path, dciodvfy, ct_series, build_findings, device, algorithm):
    findings = build_findings(ct_series)
    pdf_identity = identity(952)
    ds = write_pdf_report(ct_series, findings, pdf_identity, device, algorithm)
    assert dciodvfy(ds, tmp_path / "pdf.dcm") == []
    back = pydicom.dcmread(tmp_path / "pdf.dcm")
    assert back.Modality == "DOC"
    assert back.MIMETypeOfEncapsulatedDocument == "application/pdf"
    document = bytes(back.EncapsulatedDocument)[: int(back.EncapsulatedDocumentLength)]
    assert document.startswith(b"%PDF-") and document.rstrip().endswith(b"%%EOF")
    assert [i.ReferencedSOPInstanceUID for i in back.SourceInstanceSequence] == list(
        findings.source_sop_instance_uids
    )


def test_pdf_pages_render(ct_series, build_findings, device, algorithm):
    pdfium = pytest.importorskip("pypdfium2")
    findings = build_findings(ct_series)
    document = pdfium.PdfDocument(render_pdf(ct_series, findings, device, algorithm))
    assert len(document) == 2
    first = np.asarray(document[0].render(scale=1).to_pil().convert("RGB"))
    assert (first < 100).all(axis=2).sum() > 2000  # text and table lines
    text = document[0].get_textpage().get_text_range()
    assert "ct-anatomy 1.2.0" in text and "Volume" in text and "3456.12" in text
    second = np.asarray(document[1].render(scale=1).to_pil().convert("RGB")).astype(int)
    lungs = np.array(findings.segment(2).description.color_rgb)
    close = (np.abs(second - lungs).sum(axis=2) < 60).sum()
    assert close > 20  # the lung outline in its colour on a key image


def test_key_object_selection(tmp_path, dciodvfy, ct_series, build_findings, device, algorithm):
    findings = dataclasses.replace(build_findings(ct_series), key_frames=(3, 7))
    ds = write_key_object_selection(ct_series, findings, identity(953), device, algorithm)
    assert dciodvfy(ds, tmp_path / "ko.dcm") == []
    kos = hd.ko.KeyObjectSelectionDocument.from_dataset(pydicom.dcmread(tmp_path / "ko.dcm"))
    assert kos.Modality == "KO"
    references = {
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for item in kos.ContentSequence
        if "ReferencedSOPSequence" in item
    }
    assert references == {ct_series[3].SOPInstanceUID, ct_series[7].SOPInstanceUID}


def test_rejection_note_withdraws_earlier_results(
    tmp_path, dciodvfy, ct_series, build_findings, device, algorithm
):
    """An IHE IOCM rejection note: KOS titled 113001.

    It lists the withdrawn SEG and SR, in their study.
    """
    seg, sr = write_results(
        ct_series, build_findings(ct_series), identity(9001), identity(9002), device, algorithm
    )
    headers = []
    for name, ds in (("seg", seg), ("sr", sr)):
        ds.save_as(tmp_path / f"{name}.dcm", enforce_file_format=True)
        headers.append(pydicom.dcmread(tmp_path / f"{name}.dcm", stop_before_pixels=True))
    note = write_rejection_note(
        headers,
        ct_series[0],
        identity(9006),
        device,
        algorithm,
        reason="superseded by job 7: the series gained instances",
    )
    assert dciodvfy(note, tmp_path / "reject.dcm") == []
    kos = hd.ko.KeyObjectSelectionDocument.from_dataset(pydicom.dcmread(tmp_path / "reject.dcm"))
    title = kos.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator) == ("113001", "DCM")
    assert (
        kos.StudyInstanceUID == ct_series[0].StudyInstanceUID
        and kos.PatientID == ct_series[0].PatientID
    )
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in kos.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert evidence == {seg.SOPInstanceUID, sr.SOPInstanceUID}
    content = {
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for item in kos.ContentSequence
        if "ReferencedSOPSequence" in item
    }
    assert content == evidence
    assert any(
        "superseded by job 7" in str(item.get("TextValue", "")) for item in kos.ContentSequence
    )
    other_study = pydicom.dcmread(tmp_path / "seg.dcm", stop_before_pixels=True)
    other_study.StudyInstanceUID = "1.2.3.4"
    with pytest.raises(EncodingError, match="one study"):
        write_rejection_note(
            [other_study], ct_series[0], identity(9006), device, algorithm, reason="x"
        )
    with pytest.raises(EncodingError, match="at least one"):
        write_rejection_note([], ct_series[0], identity(9006), device, algorithm, reason="x")
