"""Checks that source images, findings and algorithm belong together.

Both writers run these checks before building anything: a result whose frames
point at the wrong source images is worse than no result.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

from pydicom.dataset import Dataset

from dicom_sr.errors import IdentityError, SourceImagesError
from dicom_sr.identity import AlgorithmIdentity
from pipelines.findings import Findings

logger = logging.getLogger(__name__)

_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def check_source_images(source_images: Sequence[Dataset], findings: Findings) -> None:
    """Check that ``source_images`` are the findings' source, in frame order.

    Two kinds of source are accepted: single-frame images of one series in
    the order of ``findings.source_sop_instance_uids``, or exactly one
    multi-frame image (e.g. Enhanced CT/MR, PS3.3 C.7.6.16) whose SOP Instance
    UID is every entry of ``findings.source_sop_instance_uids`` (its frames
    are then named by ``findings.source_frame_numbers``).

    Parameters
    ----------
    source_images : Sequence[pydicom.dataset.Dataset]
        The source images (metadata suffices for SEG and SR).
    findings : pipelines.findings.Findings
        The findings computed from them.

    Raises
    ------
    SourceImagesError
        When the images are missing, from several series, mix single- and
        multi-frame images, or are not the findings' source in the same order.
    """
    if len(source_images) == 0:
        raise SourceImagesError("no source images given")
    for index, image in enumerate(source_images):
        missing = [keyword for keyword in _REQUIRED if keyword not in image]
        if missing:
            raise SourceImagesError(f"source image {index} lacks {', '.join(missing)}")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        values = {str(image.get(keyword)) for image in source_images}
        if len(values) != 1:
            raise SourceImagesError(f"source images differ in {keyword}: {sorted(values)}")
    expected = findings.source_sop_instance_uids
    if any(int(image.get("NumberOfFrames") or 1) != 1 for image in source_images):
        _check_multiframe(source_images, findings)
        return
    given = tuple(str(image.SOPInstanceUID) for image in source_images)
    if given != expected:
        raise SourceImagesError(_describe_mismatch(given, expected))


def _check_multiframe(source_images: Sequence[Dataset], findings: Findings) -> None:
    if len(source_images) != 1:
        raise SourceImagesError(
            "a multi-frame source must be the only source image "
            f"({len(source_images)} images given)"
        )
    uid = str(source_images[0].SOPInstanceUID)
    if set(findings.source_sop_instance_uids) != {uid}:
        raise SourceImagesError(f"findings' frames are not all frames of the source image {uid}")
    n_source = int(source_images[0].NumberOfFrames)
    if len(findings.source_sop_instance_uids) > n_source:
        raise SourceImagesError(
            f"findings have {len(findings.source_sop_instance_uids)} frames, "
            f"source image has {n_source}"
        )


def _describe_mismatch(given: tuple[str, ...], expected: tuple[str, ...]) -> str:
    if len(given) != len(expected):
        return f"{len(given)} source images given, findings have {len(expected)} frames"
    if set(given) == set(expected):
        first = next(i for i, (g, e) in enumerate(zip(given, expected, strict=True)) if g != e)
        return (
            f"source images are not in the findings' frame order: frame {first} "
            f"is {expected[first]}, image {first} is {given[first]}"
        )
    unknown = sorted(set(given) - set(expected))
    return f"source images not among the findings' source: {unknown[:3]}"


def check_algorithm(findings: Findings, algorithm: AlgorithmIdentity) -> None:
    """Check that ``algorithm`` names the pipeline that produced ``findings``.

    Raises
    ------
    IdentityError
        When name or version differ from ``findings.pipeline_name`` and
        ``findings.pipeline_version``.
    """
    if (algorithm.name, algorithm.version) != (findings.pipeline_name, findings.pipeline_version):
        raise IdentityError(
            f"algorithm {algorithm.name} {algorithm.version} did not produce findings of "
            f"{findings.pipeline_name} {findings.pipeline_version}"
        )


def detach_from_source(result: Dataset, source_image: Dataset) -> None:
    """Give ``result`` its own copy of every data element it shares with ``source_image``.

    highdicom copies the Patient and Study modules by assigning the source's
    data element objects, so setting e.g. ``result.PatientName`` later would
    silently change the source image as well.
    """
    for element in list(result):
        if element.tag in source_image and source_image[element.tag] is element:
            result[element.tag] = copy.deepcopy(element)


#: Attributes of the Patient (PS3.3 C.7.1.1), Clinical Trial Subject (C.7.1.3),
#: General Study (C.7.2.1), Patient Study (C.7.2.2) and Clinical Trial Study
#: (C.7.2.3) modules. Every result is in the source's study, so each of these
#: present in the source is copied into the result unchanged.
PATIENT_AND_STUDY_KEYWORDS: tuple[str, ...] = (
    # Patient
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "TypeOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientBirthDateInAlternativeCalendar",
    "PatientDeathDateInAlternativeCalendar",
    "PatientAlternativeCalendar",
    "PatientSex",
    "QualityControlSubject",
    "StrainDescription",
    "StrainNomenclature",
    "StrainStockSequence",
    "StrainAdditionalInformation",
    "StrainCodeSequence",
    "GeneticModificationsSequence",
    "OtherPatientNames",
    "OtherPatientIDsSequence",
    "ReferencedPatientPhotoSequence",
    "EthnicGroup",
    "EthnicGroupCodeSequence",
    "PatientComments",
    "PatientSpeciesDescription",
    "PatientSpeciesCodeSequence",
    "PatientBreedDescription",
    "PatientBreedCodeSequence",
    "BreedRegistrationSequence",
    "ResponsiblePerson",
    "ResponsiblePersonRole",
    "ResponsibleOrganization",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "SourcePatientGroupIdentificationSequence",
    "GroupOfPatientsIdentificationSequence",
    "ReferencedPatientSequence",
    # Clinical Trial Subject
    "ClinicalTrialSponsorName",
    "ClinicalTrialProtocolID",
    "ClinicalTrialProtocolName",
    "ClinicalTrialSiteID",
    "ClinicalTrialSiteName",
    "ClinicalTrialSubjectID",
    "ClinicalTrialSubjectReadingID",
    "ClinicalTrialProtocolEthicsCommitteeName",
    "ClinicalTrialProtocolEthicsCommitteeApprovalNumber",
    # General Study
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "ReferringPhysicianIdentificationSequence",
    "ConsultingPhysicianName",
    "ConsultingPhysicianIdentificationSequence",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
    "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence",
    "RequestingServiceCodeSequence",
    "ReferencedStudySequence",
    "ProcedureCodeSequence",
    "ReasonForPerformedProcedureCodeSequence",
    # Patient Study
    "AdmittingDiagnosesDescription",
    "AdmittingDiagnosesCodeSequence",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "PatientBodyMassIndex",
    "MeasuredAPDimension",
    "MeasuredLateralDimension",
    "PatientSizeCodeSequence",
    "MedicalAlerts",
    "Allergies",
    "SmokingStatus",
    "AdditionalPatientHistory",
    "PregnancyStatus",
    "LastMenstrualDate",
    "PatientSexNeutered",
    "ReasonForVisit",
    "ReasonForVisitCodeSequence",
    "AdmissionID",
    "IssuerOfAdmissionIDSequence",
    "ServiceEpisodeID",
    "ServiceEpisodeDescription",
    "IssuerOfServiceEpisodeIDSequence",
    "PatientState",
    "Occupation",
    # Clinical Trial Study
    "ClinicalTrialTimePointID",
    "ClinicalTrialTimePointDescription",
    "LongitudinalTemporalOffsetFromEvent",
    "LongitudinalTemporalEventType",
    "ConsentForClinicalTrialUseSequence",
)


def copy_patient_and_study(result: Dataset, source_image: Dataset) -> None:
    """Copy the Patient and Study modules of ``source_image`` into ``result`` exactly.

    IHE AIR (RAD TF-3 6.5.2) asks every result to carry the Patient and Study
    modules of the images it was derived from: an object whose patient
    attributes differ shows up as another patient in the archive. highdicom
    copies only the Type 1/2 attributes, so every attribute of
    :data:`PATIENT_AND_STUDY_KEYWORDS` present in the source is (deep) copied,
    and Specific Character Set (0008,0005) with them so that non-ASCII names
    keep their meaning. Attributes the source lacks are left as the writer
    set them (Type 2 attributes stay empty).
    """
    for keyword in PATIENT_AND_STUDY_KEYWORDS:
        if keyword in source_image:
            result[keyword] = copy.deepcopy(source_image[keyword])
    if "SpecificCharacterSet" in source_image:
        result.SpecificCharacterSet = copy.deepcopy(source_image.SpecificCharacterSet)


def finish_result(result: Dataset, source_image: Dataset) -> None:
    """Copy Patient/Study exactly and detach every element shared with the source."""
    copy_patient_and_study(result, source_image)
    detach_from_source(result, source_image)
