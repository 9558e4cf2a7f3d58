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

    Parameters
    ----------
    source_images : Sequence[pydicom.dataset.Dataset]
        Single-frame images of one series (metadata suffices), in the order
        of ``findings.source_sop_instance_uids``.
    findings : pipelines.findings.Findings
        The findings computed from them.

    Raises
    ------
    SourceImagesError
        When the images are missing, multi-frame, from several series, or
        not the findings' source images in the same order.
    """
    if len(source_images) == 0:
        raise SourceImagesError("no source images given")
    for index, image in enumerate(source_images):
        missing = [keyword for keyword in _REQUIRED if keyword not in image]
        if missing:
            raise SourceImagesError(f"source image {index} lacks {', '.join(missing)}")
        if int(image.get("NumberOfFrames") or 1) != 1:
            raise SourceImagesError(
                f"source image {image.SOPInstanceUID} is multi-frame; "
                "only single-frame source series are supported"
            )
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        values = {str(image.get(keyword)) for image in source_images}
        if len(values) != 1:
            raise SourceImagesError(f"source images differ in {keyword}: {sorted(values)}")
    given = tuple(str(image.SOPInstanceUID) for image in source_images)
    expected = findings.source_sop_instance_uids
    if given != expected:
        raise SourceImagesError(_describe_mismatch(given, expected))


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
