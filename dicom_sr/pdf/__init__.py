"""Encapsulated PDF summary report (PS3.3 A.45.1)."""

from __future__ import annotations

from dicom_sr.pdf.writer import render_pdf, write_pdf_report

__all__ = ["render_pdf", "write_pdf_report"]
