"""Write a PDF summary of the findings as an Encapsulated PDF (PS3.3 A.45.1).

For PACS that show no structured results at all: what was analysed, the
algorithm and its version, the measurement table and the key images with
the segment outlines, marked "not for primary diagnosis". Modality is DOC.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DataElementSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
)

from dicom_sr.codes import DIAGNOSTIC_IMAGING_REPORT
from dicom_sr.equipment import contributing_equipment, set_general_equipment
from dicom_sr.geometry import source_frames
from dicom_sr.identity import AlgorithmIdentity, DeviceIdentity, ResultIdentity
from dicom_sr.render import frames_to_show, render_frame
from dicom_sr.sources import check_algorithm, check_source_images, finish_result
from pipelines.findings import Findings

logger = logging.getLogger(__name__)

#: Key images put in the PDF at most.
MAX_KEY_IMAGES = 8


def render_pdf(
    source_images: Sequence[Dataset],
    findings: Findings,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
) -> bytes:
    """Return the summary PDF of ``findings`` (without DICOM encapsulation)."""
    from dicom_sr.pdf.layout import layout_pdf  # fpdf2 only when a PDF is asked for

    check_source_images(source_images, findings)
    check_algorithm(findings, algorithm)
    key_images: list[tuple[int, np.ndarray]] = []
    if findings.segments and "PixelData" in source_images[0]:
        frames = source_frames(source_images, findings)
        segments = sorted(findings.segments, key=lambda s: s.description.number)
        for frame in frames_to_show(findings, all_frames=False)[:MAX_KEY_IMAGES]:
            key_images.append((frame, render_frame(frames, segments, frame)))
    return layout_pdf(source_images[0], len(source_images), findings, device, algorithm, key_images)


def write_pdf_report(
    source_images: Sequence[Dataset],
    findings: Findings,
    identity: ResultIdentity,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
) -> Dataset:
    """Write the summary as an Encapsulated PDF instance in the source's study.

    Modules: Patient, General Study (copied exactly), Encapsulated Document
    Series, General Equipment, SC Equipment (Conversion Type WSD), Encapsulated
    Document (Burned In Annotation YES, the source images in the Source
    Instance Sequence), SOP Common with the algorithm as Contributing
    Equipment.

    Returns
    -------
    pydicom.dataset.Dataset
        The instance, with file meta.
    """
    pdf = render_pdf(source_images, findings, device, algorithm)
    source = source_images[0]
    now = dt.datetime.now()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID(identity.sop_instance_uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = identity.sop_instance_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = (
        now.strftime("%Y%m%d"),
        now.strftime("%H%M%S"),
    )
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "", "", "", ""
    ds.StudyInstanceUID = source.StudyInstanceUID
    ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName, ds.StudyID = "", "", "", ""
    ds.AccessionNumber = ""
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = identity.series_instance_uid
    ds.SeriesNumber = identity.series_number
    ds.SeriesDescription = identity.series_description
    set_general_equipment(ds, device)
    ds.ConversionType = "WSD"
    ds.InstanceNumber = identity.instance_number
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = f"AI result summary: {algorithm.name} {algorithm.version}"[:64]
    ds.ConceptNameCodeSequence = [
        hd.sr.CodedConcept(
            DIAGNOSTIC_IMAGING_REPORT.value,
            DIAGNOSTIC_IMAGING_REPORT.scheme,
            DIAGNOSTIC_IMAGING_REPORT.meaning,
        )
    ]
    ds.SourceInstanceSequence = DataElementSequence([_reference(image) for image in source_images])
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.ContributingEquipmentSequence = DataElementSequence(
        contributing_equipment(device, algorithm)
    )
    finish_result(ds, source)
    logger.info("wrote PDF %s (%d bytes)", identity.sop_instance_uid, len(pdf))
    return ds


def _reference(image: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = image.SOPClassUID
    item.ReferencedSOPInstanceUID = image.SOPInstanceUID
    return item
