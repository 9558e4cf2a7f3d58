"""Write a Key Object Selection Document (PS3.16 TID 2010) of the key images.

Title DCM 113000 "Of Interest" (CID 7010); the node is the device observer;
the selection lists the source images of the key frames (for a multi-frame
source, the instance) and the SEG and SR written for the same findings, so a
viewer that honours KOS opens the key images with the results.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset

from dicom_sr.codes import (
    OBSERVER_TYPE_DEVICE,
    OF_INTEREST,
    REJECTED_FOR_QUALITY_REASONS,
    coded_concept,
)
from dicom_sr.equipment import result_object_arguments
from dicom_sr.errors import EncodingError
from dicom_sr.geometry import source_frames
from dicom_sr.identity import AlgorithmIdentity, DeviceIdentity, ResultIdentity
from dicom_sr.render import frames_to_show
from dicom_sr.sources import check_algorithm, check_source_images, finish_result
from pipelines.findings import Findings

logger = logging.getLogger(__name__)


def write_key_object_selection(
    source_images: Sequence[Dataset],
    findings: Findings,
    identity: ResultIdentity,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
    *,
    results: Sequence[Dataset] = (),
) -> Dataset | None:
    """Write a KOS selecting the key images of ``findings``.

    Key frames are ``findings.key_frames`` or, when the pipeline names none,
    the frame of each segment's largest cross-section.

    Parameters
    ----------
    results : Sequence[pydicom.dataset.Dataset]
        Result objects (SEG, SR) to select along with the key images.

    Returns
    -------
    pydicom.dataset.Dataset | None
        The KOS instance; ``None`` when there is no key frame.
    """
    check_source_images(source_images, findings)
    check_algorithm(findings, algorithm)
    keys = frames_to_show(findings, all_frames=False)
    if not keys:
        logger.info("findings of %s have no key frames: no KOS", findings.pipeline_name)
        return None
    frames = source_frames(source_images, findings)
    selected: dict[str, Dataset] = {}
    for frame in keys:
        image, _ = frames.reference(frame)
        selected.setdefault(str(image.SOPInstanceUID), image)
    references = [*selected.values(), *results]
    try:
        content = hd.ko.KeyObjectSelection(
            document_title=coded_concept(OF_INTEREST),
            referenced_objects=references,
            observer_device_context=_device_observer(device),
            description=f"Key images of {algorithm.name} {algorithm.version}"[:1024],
        )
        document = hd.ko.KeyObjectSelectionDocument(
            evidence=references,
            content=content,
            **result_object_arguments(identity, device, algorithm, full=False),
        )
    except ValueError as exc:
        raise EncodingError(f"cannot encode key object selection: {exc}") from exc
    document.SeriesDescription = identity.series_description
    finish_result(document, source_images[0])
    logger.info("wrote KOS %s: %d key images", identity.sop_instance_uid, len(selected))
    return document


def _device_observer(device: DeviceIdentity) -> hd.sr.ObserverContext:
    return hd.sr.ObserverContext(
        observer_type=coded_concept(OBSERVER_TYPE_DEVICE),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device.observer_uid,
            name=device.observer_name,
            manufacturer_name=device.manufacturer,
            model_name=device.manufacturer_model_name,
            serial_number=device.device_serial_number,
        ),
    )


def write_rejection_note(
    rejected: Sequence[Dataset],
    source_image: Dataset,
    identity: ResultIdentity,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
    *,
    reason: str,
) -> Dataset:
    """Write an IHE IOCM rejection note withdrawing earlier results.

    A KOS titled DCM 113001 "Rejected for Quality Reasons" (PS3.16 CID 7010)
    that lists ``rejected`` (headers suffice): an archive that supports IOCM
    (dcm4chee-arc, many vendor PACS) hides them; elsewhere the note shows in
    the study as a KO series saying which results were withdrawn and why.

    Parameters
    ----------
    rejected : Sequence[pydicom.dataset.Dataset]
        The withdrawn result objects, all of ``source_image``'s study.
    source_image : pydicom.dataset.Dataset
        An image of the study (Patient and Study modules are copied from it).
    reason : str
        Why, in words (Key Object Description), e.g. "superseded by job 7".

    Raises
    ------
    EncodingError
        When nothing is rejected, or an object is of another study.
    """
    if not rejected:
        raise EncodingError("a rejection note needs at least one rejected object")
    study = str(source_image.StudyInstanceUID)
    if any(str(ds.StudyInstanceUID) != study for ds in rejected):
        raise EncodingError("a rejection note and the objects it rejects must be of one study")
    try:
        content = hd.ko.KeyObjectSelection(
            document_title=coded_concept(REJECTED_FOR_QUALITY_REASONS),
            referenced_objects=list(rejected),
            observer_device_context=_device_observer(device),
            description=reason[:1024],
        )
        document = hd.ko.KeyObjectSelectionDocument(
            evidence=list(rejected),
            content=content,
            **result_object_arguments(identity, device, algorithm, full=False),
        )
    except ValueError as exc:
        raise EncodingError(f"cannot encode rejection note: {exc}") from exc
    document.SeriesDescription = identity.series_description
    finish_result(document, source_image)
    logger.info(
        "wrote rejection note %s: %d objects withdrawn", identity.sop_instance_uid, len(rejected)
    )
    return document
