"""Turn one pipeline's findings into the DICOM objects sent back to the PACS."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydicom.dataset import Dataset

from dicom_sr.errors import IdentityError
from dicom_sr.identity import AlgorithmIdentity, DeviceIdentity, ResultIdentity
from dicom_sr.seg import write_segmentation
from dicom_sr.sr import write_measurement_report
from pipelines.findings import Findings

logger = logging.getLogger(__name__)


def write_results(
    source_images: Sequence[Dataset],
    findings: Findings,
    seg_identity: ResultIdentity,
    sr_identity: ResultIdentity,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
) -> tuple[Dataset, ...]:
    """Write the SEG and SR instances for ``findings``.

    A Segmentation (PS3.3 A.51) is written when the findings have segments,
    then a Comprehensive 3D SR holding a TID 1500 Measurement Report (PS3.16)
    when they have measurements; the SR references the SEG's segments.

    Parameters
    ----------
    source_images : Sequence[pydicom.dataset.Dataset]
        Single-frame source images in the order of
        ``findings.source_sop_instance_uids``; metadata suffices.
    findings : pipelines.findings.Findings
        What the pipeline found.
    seg_identity, sr_identity : ResultIdentity
        UIDs, numbers and descriptions of the SEG and the SR; the two must
        not share a series or instance UID.
    device : DeviceIdentity
        The node.
    algorithm : AlgorithmIdentity
        The algorithm that produced ``findings``.

    Returns
    -------
    tuple[pydicom.dataset.Dataset, ...]
        The SEG (if any segments) followed by the SR (if any measurements);
        empty when the findings hold neither.

    Raises
    ------
    DicomWriterError
        Any error of :mod:`dicom_sr.errors`, when a result cannot be written.
    """
    if {seg_identity.series_instance_uid, seg_identity.sop_instance_uid} & {
        sr_identity.series_instance_uid,
        sr_identity.sop_instance_uid,
    }:
        raise IdentityError("SEG and SR must have their own series and instance UIDs")
    results: list[Dataset] = []
    segmentation = None
    if findings.segments:
        segmentation = write_segmentation(source_images, findings, seg_identity, device, algorithm)
        results.append(segmentation)
    if findings.measurements:
        results.append(
            write_measurement_report(
                source_images, findings, segmentation, sr_identity, device, algorithm
            )
        )
    if not results:
        logger.info("findings of %s hold no segments or measurements", findings.pipeline_name)
    return tuple(results)
