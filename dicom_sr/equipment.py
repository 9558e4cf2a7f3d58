"""The algorithm as contributing equipment (IHE AIR, PS3.3 C.12.1.1.5).

IHE AI Results (RAD TF-3 6.5.x, "AI Result Encoding") asks every result
object to identify the algorithm in the Contributing Equipment Sequence
(0018,A001) of the SOP Common Module: manufacturer, model name, software
version and a Device UID that changes whenever the model changes. The node
itself stays in the General Equipment Module of the object.

Purpose of Reference is DCM 109102 "Processing Equipment" (PS3.16 CID 7005
"Contributing Equipment Purposes of Reference"): CID 7005 has no
"Processing Algorithm" concept, and DCM 109103 is "Modifying Equipment"
(equipment that altered an existing instance), which an AI result is not.
"""

from __future__ import annotations

import logging
from typing import Any

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from dicom_sr.identity import AlgorithmIdentity, DeviceIdentity, ResultIdentity, derived_uid

logger = logging.getLogger(__name__)

#: Purpose of Reference of the algorithm (PS3.16 CID 7005, DCM 109102).
PROCESSING_EQUIPMENT = codes.DCM.ProcessingEquipment


def algorithm_device_uid(algorithm: AlgorithmIdentity) -> str:
    """Return the Device UID (0018,1002) of the algorithm as equipment.

    Derived (PS3.5 B.2, name-based UUID) from the algorithm name, version and
    model checksum: the same model always has the same UID, and a new
    version or new weights give a new one, as IHE AIR requires. Parameters
    are not part of it (they are recorded in the Algorithm Identification).

    Parameters
    ----------
    algorithm : AlgorithmIdentity
        The algorithm.

    Returns
    -------
    str
        A ``2.25.`` UID.
    """
    return derived_uid(
        "algorithm-device", algorithm.name, algorithm.version, algorithm.model_checksum or ""
    )


def contributing_equipment(
    device: DeviceIdentity, algorithm: AlgorithmIdentity
) -> list[hd.ContributingEquipment]:
    """Describe the algorithm as one Contributing Equipment Sequence item.

    Manufacturer is the algorithm source (who made the model) or, without
    one, the node's manufacturer; Manufacturer's Model Name is the algorithm
    name, Software Versions its version, Device UID
    :func:`algorithm_device_uid`; Institution Name is the node's site.

    Returns
    -------
    list[highdicom.ContributingEquipment]
        One item, ready for the writers' ``contributing_equipment`` argument.
    """
    item = hd.ContributingEquipment(
        manufacturer=algorithm.source or device.manufacturer,
        purpose_of_reference=PROCESSING_EQUIPMENT,
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version,
        institution_name=device.institution_name,
        contribution_description=f"AI algorithm {algorithm.name} {algorithm.version}"[:64],
    )
    item.DeviceUID = algorithm_device_uid(algorithm)
    return [item]


def set_general_equipment(ds: Dataset, device: DeviceIdentity) -> None:
    """The node as the General Equipment (PS3.3 C.7.5.1) of a result built by hand."""
    ds.Manufacturer = device.manufacturer
    ds.ManufacturerModelName = device.manufacturer_model_name
    ds.SoftwareVersions = device.software_versions
    ds.DeviceSerialNumber = device.device_serial_number
    if device.institution_name:
        ds.InstitutionName = device.institution_name


def result_object_arguments(
    identity: ResultIdentity,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
    *,
    full: bool = True,
) -> dict[str, Any]:
    """The keyword arguments every highdicom result constructor shares.

    Series and instance identity, the node as manufacturer, and the algorithm
    in the Contributing Equipment Sequence (IHE AIR). ``full=False`` leaves
    out the General Equipment attributes some constructors (KOS) do not take.
    """
    arguments: dict[str, Any] = {
        "series_instance_uid": identity.series_instance_uid,
        "series_number": identity.series_number,
        "sop_instance_uid": identity.sop_instance_uid,
        "instance_number": identity.instance_number,
        "manufacturer": device.manufacturer,
        "institution_name": device.institution_name,
        "contributing_equipment": contributing_equipment(device, algorithm),
    }
    if full:
        arguments |= {
            "manufacturer_model_name": device.manufacturer_model_name,
            "software_versions": device.software_versions,
            "device_serial_number": device.device_serial_number,
            "series_description": identity.series_description,
            "content_qualification": device.content_qualification,
        }
    return arguments
