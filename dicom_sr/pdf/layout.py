"""Lay out the PDF summary of one result with fpdf2 (pure Python)."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import numpy as np
from fpdf import FPDF
from PIL import Image
from pydicom.dataset import Dataset

from dicom_sr.equipment import algorithm_device_uid
from dicom_sr.identity import AlgorithmIdentity, DeviceIdentity
from dicom_sr.render import DISCLAIMER
from pipelines.findings import Findings

logger = logging.getLogger(__name__)

_KEY_IMAGES_PER_ROW = 2


def _latin1(text: object) -> str:
    """fpdf2's core fonts are Latin-1: replace what they cannot show."""
    return str(text).encode("latin-1", "replace").decode("latin-1")


def _pairs(pdf: FPDF, rows: Sequence[tuple[str, str]]) -> None:
    for key, value in rows:
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(45, 5, _latin1(key))
        pdf.set_font("Helvetica", "", 9)
        pdf.multi_cell(0, 5, _latin1(value), new_x="LMARGIN", new_y="NEXT")


def _heading(pdf: FPDF, text: str) -> None:
    pdf.ln(2)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(0, 7, _latin1(text), new_x="LMARGIN", new_y="NEXT")


def _table(pdf: FPDF, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    pdf.set_font("Helvetica", "", 8)
    with pdf.table(text_align="LEFT", first_row_as_headings=True, line_height=5) as table:
        for values in (header, *rows):
            row = table.row()
            for value in values:
                row.cell(_latin1(value))


def layout_pdf(
    source: Dataset,
    n_images: int,
    findings: Findings,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
    key_images: Sequence[tuple[int, np.ndarray]],
) -> bytes:
    """Return the PDF bytes of the summary.

    Page 1: patient, study and analysed series, algorithm and node, the
    measurement, classification and detection tables and the pipeline's
    notes; then the key images with their outlines (``(frame, rgb)`` pairs).
    """
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.set_title(f"AI result summary: {algorithm.name}")
    pdf.set_creator(f"{device.manufacturer_model_name} {device.software_versions}")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)
    pdf.cell(0, 9, _latin1(f"AI result summary: {algorithm.name}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(180, 0, 0)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(0, 6, _latin1(DISCLAIMER.upper()), new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    _heading(pdf, "Patient and study")
    _pairs(
        pdf,
        [
            ("Patient", f"{source.get('PatientName', '')}  (ID {source.get('PatientID', '')})"),
            (
                "Birth date / sex",
                f"{source.get('PatientBirthDate', '')} / {source.get('PatientSex', '')}",
            ),
            ("Study", f"{source.get('StudyDescription', '')}  {source.get('StudyDate', '')}"),
            ("Accession number", str(source.get("AccessionNumber", ""))),
        ],
    )
    _heading(pdf, "Analysed series")
    _pairs(
        pdf,
        [
            ("Series", f"#{source.get('SeriesNumber', '')} {source.get('SeriesDescription', '')}"),
            (
                "Modality / images",
                (
                    f"{source.get('Modality', '')} / {n_images} image(s), "
                    f"{len(findings.source_sop_instance_uids)} frame(s)"
                ),
            ),
            ("Series Instance UID", str(source.SeriesInstanceUID)),
        ],
    )
    _heading(pdf, "Algorithm")
    _pairs(
        pdf,
        [
            ("Name / version", f"{algorithm.name} {algorithm.version}"),
            ("Source", algorithm.source or "-"),
            ("Model checksum", algorithm.model_checksum or "-"),
            ("Device UID", algorithm_device_uid(algorithm)),
            (
                "Run by",
                (
                    f"{device.manufacturer} {device.manufacturer_model_name} "
                    f"{device.software_versions} (serial {device.device_serial_number})"
                ),
            ),
        ],
    )
    _findings_tables(pdf, findings)
    _key_images(pdf, key_images)
    return bytes(pdf.output())


def _findings_tables(pdf: FPDF, findings: Findings) -> None:
    labels = {s.description.number: s.description.label for s in findings.segments}
    if findings.measurements:
        _heading(pdf, "Measurements")
        _table(
            pdf,
            ("Finding", "Measurement", "Value", "Unit", "Derivation"),
            [
                (
                    labels.get(m.segment_number, "whole series")
                    if m.segment_number
                    else "whole series",
                    m.concept.meaning,
                    f"{m.value:.6g}",
                    m.unit.value,
                    m.derivation.meaning if m.derivation else "",
                )
                for m in findings.measurements
            ],
        )
    if findings.classifications:
        _heading(pdf, "Classifications")
        _table(
            pdf,
            ("Finding", "Evaluation", "Result", "Probability"),
            [
                (
                    labels.get(c.segment_number, "whole series")
                    if c.segment_number
                    else "whole series",
                    c.concept.meaning,
                    c.value.meaning,
                    f"{c.probability:.3f}" if c.probability is not None else "",
                )
                for c in findings.classifications
            ],
        )
    if findings.detections:
        _heading(pdf, "Detections")
        _table(
            pdf,
            ("Label", "Finding", "Score", "Frames", "Box (row, column)"),
            [
                (
                    d.label,
                    d.finding.meaning,
                    f"{d.score:.3f}",
                    f"{int(d.box_min[0]) + 1}-{int(d.box_max[0])}",
                    f"({d.box_min[1]:g},{d.box_min[2]:g})-({d.box_max[1]:g},{d.box_max[2]:g})",
                )
                for d in findings.detections
            ],
        )
    if findings.notes:
        _heading(pdf, "Notes")
        pdf.set_font("Helvetica", "", 9)
        for note in findings.notes:
            pdf.multi_cell(0, 5, _latin1(f"- {note}"), new_x="LMARGIN", new_y="NEXT")


def _key_images(pdf: FPDF, key_images: Sequence[tuple[int, np.ndarray]]) -> None:
    if not key_images:
        return
    pdf.add_page()
    _heading(pdf, "Key images with outlines")
    width = (pdf.epw - 5 * (_KEY_IMAGES_PER_ROW - 1)) / _KEY_IMAGES_PER_ROW
    for index, (frame, rgb) in enumerate(key_images):
        column = index % _KEY_IMAGES_PER_ROW
        height = width * rgb.shape[0] / rgb.shape[1]
        if column == 0 and pdf.get_y() + height + 8 > pdf.h - pdf.b_margin:
            pdf.add_page()
        x = pdf.l_margin + column * (width + 5)
        y = pdf.get_y()
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
        pdf.image(buffer, x=x, y=y, w=width, h=height)
        pdf.set_xy(x, y + height)
        pdf.set_font("Helvetica", "", 8)
        pdf.cell(width, 5, f"Frame {frame + 1}")
        if column == _KEY_IMAGES_PER_ROW - 1 or index == len(key_images) - 1:
            pdf.set_xy(pdf.l_margin, y + height + 7)
        else:
            pdf.set_xy(x + width + 5, y)
