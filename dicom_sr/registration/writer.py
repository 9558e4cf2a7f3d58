"""Write a registration onto a prior study as Spatial Registration objects (PS3.3 A.39).

highdicom has no Spatial Registration classes, so these are built with pydicom.

**Direction.** PS3.3 C.20.2.1.1: the Frame of Reference Transformation
Matrix of a Registration Sequence item maps coordinates of the item's Frame
of Reference (RCS_B) into the Registered RCS (RCS_A), the Frame of Reference
of the registration object itself. The object is in the current study and
in the current series' Frame of Reference, so:

* item 1: the current Frame of Reference, identity matrix (RIGID), DCM
  125021 "Frame of Reference Identity", referencing the current images;
* item 2: the prior's Frame of Reference with ``Registration.matrix``,
  which maps prior coordinates to current ones - exactly that direction -
  DCM 125024 "Image Content-based Alignment".

The Deformable Spatial Registration (C.20.3.1.1) runs the other way: its
matrices and the grid are applied to Registered RCS (current) coordinates and
give the sample point in the Source RCS (prior): ``source = M_post @ (M_pre
@ p + D(p))``. The findings' convention, "a current point ``p`` corresponds
to the prior point ``inv(matrix) @ p + u(p)``", is that equation with
``M_pre = inv(matrix)``, ``D = u`` and no post-deformation matrix. So the
deformable object's Pre Deformation Matrix is the **inverse** of
``Registration.matrix`` (the rigid object carries ``matrix`` itself).

**Matrix type** (C.20.2.1.2): ``RIGID`` when the 3x3 part is a rotation
(orthonormal, determinant +1), ``RIGID_SCALE`` when it is a rotation times a
uniform scale, ``AFFINE`` otherwise.

**Grid** (C.20.3.1.3): the dense field ``u`` lies on the current voxel grid;
it is sampled every ``max(1, floor(3 mm / spacing))`` voxels along each axis
(the registration computes it on a 3 mm working grid, so no detail is lost),
coarser still until at most :data:`MAX_GRID_VECTORS` vectors remain. Grid
points are current voxel centres: Image Position (Patient) of the first
frame, the current Image Orientation (Patient), Grid Resolution ``(column
step, row step, frame step)`` in mm, vectors (x, y, z in patient mm, LPS)
column fastest, then row, then frame, as little-endian float32 (OF).

**References.** The prior is named by its Frame of Reference UID; the
findings carry no prior SOP Instance UIDs, so the prior's images are listed
(Referenced Image Sequence of item 2 and the Common Instance Reference
module's other-studies sequence) only when ``prior_images`` are given to
the rigid writer.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DataElementSequence
from pydicom.uid import (
    DeformableSpatialRegistrationStorage,
    SpatialRegistrationStorage,
)

from dicom_sr.codes import FRAME_OF_REFERENCE_IDENTITY, IMAGE_CONTENT_BASED_ALIGNMENT, coded_concept
from dicom_sr.derived.encoding import ds_values, result_skeleton
from dicom_sr.derived.stack import SourceStack, source_stack
from dicom_sr.equipment import contributing_equipment
from dicom_sr.errors import EncodingError, SourceImagesError
from dicom_sr.identity import AlgorithmIdentity, DeviceIdentity, ResultIdentity
from dicom_sr.sources import finish_result
from pipelines.findings import Code, Registration

logger = logging.getLogger(__name__)

#: Deformation grid vectors written at most (24 MB of float32 triples).
MAX_GRID_VECTORS = 2_000_000
#: Target spacing of the deformation grid, mm (the registration's finest working grid).
GRID_SPACING_MM = 3.0
_MATRIX_ATOL = 1e-6


def matrix_type(matrix: np.ndarray) -> str:
    """Frame of Reference Transformation Matrix Type (0070,030C) of a 4x4 matrix."""
    linear = np.asarray(matrix, dtype=float)[:3, :3]
    gram = linear.T @ linear
    determinant = float(np.linalg.det(linear))
    if determinant > 0 and np.allclose(gram, np.eye(3), atol=_MATRIX_ATOL):
        return "RIGID"
    scale = float(np.trace(gram)) / 3.0
    if determinant > 0 and np.allclose(
        gram, scale * np.eye(3), atol=_MATRIX_ATOL * max(scale, 1.0)
    ):
        return "RIGID_SCALE"
    return "AFFINE"


def write_spatial_registration(
    source_images: Sequence[Dataset],
    registration: Registration,
    identity: ResultIdentity,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
    *,
    prior_images: Sequence[Dataset] = (),
) -> Dataset:
    """Write ``registration`` as a Spatial Registration instance (PS3.3 A.39.1, C.20.2).

    Parameters
    ----------
    source_images : Sequence[pydicom.dataset.Dataset]
        The current series (metadata suffices); its Frame of Reference is the
        Registered RCS.
    registration : pipelines.findings.Registration
        The prior->current matrix (module docstring for the direction).
    identity : ResultIdentity
        Series and instance of the registration object.
    device, algorithm
        The node and the algorithm.
    prior_images : Sequence[pydicom.dataset.Dataset]
        Images of the prior series (metadata), to reference them; optional.

    Returns
    -------
    pydicom.dataset.Dataset
        The instance, Modality REG, with file meta information.
    """
    stack, matrix = _check(source_images, registration)
    prior = _prior_images(registration, prior_images)
    ds = _registration_object(
        SpatialRegistrationStorage, source_images[0], identity, device, algorithm
    )
    ds.ContentLabel = "REGISTRATION"
    current = Dataset()
    current.FrameOfReferenceUID = stack.frame_of_reference_uid
    current.ReferencedImageSequence = _image_references(source_images)
    current.MatrixRegistrationSequence = DataElementSequence(
        [_matrix_registration(np.eye(4), FRAME_OF_REFERENCE_IDENTITY, None)]
    )
    moved = Dataset()
    moved.FrameOfReferenceUID = registration.prior_frame_of_reference_uid
    if prior:
        moved.ReferencedImageSequence = _image_references(prior)
    comment = f"prior onto current Frame of Reference by {algorithm.name}"[:64]
    moved.MatrixRegistrationSequence = DataElementSequence(
        [_matrix_registration(matrix, IMAGE_CONTENT_BASED_ALIGNMENT, comment)]
    )
    ds.RegistrationSequence = DataElementSequence([current, moved])
    _common_instance_reference(ds, source_images, prior)
    finish_result(ds, source_images[0])
    logger.info(
        "wrote spatial registration %s (%s)", identity.sop_instance_uid, matrix_type(matrix)
    )
    return ds


def write_deformable_registration(
    source_images: Sequence[Dataset],
    registration: Registration,
    identity: ResultIdentity,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
) -> Dataset:
    """Write ``registration`` as a Deformable Spatial Registration (PS3.3 A.39.2, C.20.3).

    Parameters are those of :func:`write_spatial_registration`;
    ``registration.deformation`` must be ``[3, frame, row, column]`` on the
    grid of ``source_images`` sorted along the slice normal. Items name
    their Frames of Reference only: a Referenced Image Sequence is required
    (C.20.3) only for a registration of a subset of a Frame of Reference's
    images, which this is not, so no image (and no Common Instance
    Reference content) is listed.

    Returns
    -------
    pydicom.dataset.Dataset
        The instance, Modality REG, with file meta information.

    Raises
    ------
    EncodingError
        When there is no deformation, its shape differs from the current
        grid, the grid is sheared or irregular, or the matrix is singular.
    """
    stack, matrix = _check(source_images, registration)
    if registration.deformation is None:
        raise EncodingError("registration has no deformation to write")
    try:
        inverse = np.linalg.inv(matrix)
    except np.linalg.LinAlgError as exc:
        raise EncodingError("registration matrix is singular") from exc
    grid = _deformation_grid(stack, registration.deformation)
    ds = _registration_object(
        DeformableSpatialRegistrationStorage, source_images[0], identity, device, algorithm
    )
    ds.ContentLabel = "DEFORMABLE_REG"
    current = Dataset()
    current.SourceFrameOfReferenceUID = stack.frame_of_reference_uid
    current.RegistrationTypeCodeSequence = DataElementSequence(
        [coded_concept(FRAME_OF_REFERENCE_IDENTITY)]
    )
    moved = Dataset()
    moved.SourceFrameOfReferenceUID = registration.prior_frame_of_reference_uid
    moved.FrameOfReferenceTransformationComment = (
        f"current to prior: matrix, then grid; {algorithm.name}"[:64]
    )
    moved.RegistrationTypeCodeSequence = DataElementSequence(
        [coded_concept(IMAGE_CONTENT_BASED_ALIGNMENT)]
    )
    moved.PreDeformationMatrixRegistrationSequence = DataElementSequence([_matrix(inverse)])
    moved.DeformableRegistrationGridSequence = DataElementSequence([grid])
    ds.DeformableRegistrationSequence = DataElementSequence([current, moved])
    finish_result(ds, source_images[0])
    logger.info(
        "wrote deformable registration %s (grid %s)",
        identity.sop_instance_uid,
        list(grid.GridDimensions),
    )
    return ds


def _check(
    source_images: Sequence[Dataset], registration: Registration
) -> tuple[SourceStack, np.ndarray]:
    stack = source_stack(source_images)
    studies = {str(image.StudyInstanceUID) for image in source_images}
    if len(studies) != 1:
        raise SourceImagesError(f"source images differ in StudyInstanceUID: {sorted(studies)}")
    matrix = np.asarray(registration.matrix, dtype=float)
    if not np.isfinite(matrix).all():
        raise EncodingError("registration matrix is not finite")
    if not np.allclose(matrix[3], (0.0, 0.0, 0.0, 1.0), atol=1e-9):
        raise EncodingError(f"registration matrix is not affine: last row {matrix[3].tolist()}")
    if registration.prior_frame_of_reference_uid == stack.frame_of_reference_uid:
        raise EncodingError("the prior is in the current Frame of Reference: nothing to register")
    return stack, matrix


def _prior_images(registration: Registration, prior_images: Sequence[Dataset]) -> list[Dataset]:
    prior = [
        image
        for image in prior_images
        if str(image.get("SeriesInstanceUID")) == registration.prior_series_instance_uid
    ]
    for image in prior:
        if str(image.get("FrameOfReferenceUID")) != registration.prior_frame_of_reference_uid:
            raise SourceImagesError(
                f"prior image {image.SOPInstanceUID} is not in the prior Frame of Reference"
            )
    return prior


def _registration_object(
    sop_class_uid: str,
    source: Dataset,
    identity: ResultIdentity,
    device: DeviceIdentity,
    algorithm: AlgorithmIdentity,
) -> Dataset:
    """SOP Common, Patient/Study placeholders, Spatial Registration Series, Frame of
    Reference, General and Enhanced General Equipment, Content Identification."""
    ds = result_skeleton(
        sop_class_uid, identity.sop_instance_uid, "REG", source, identity, device, dt.datetime.now()
    )
    ds.InstanceNumber = identity.instance_number
    ds.ContentDescription = f"Prior study registered by {algorithm.name} {algorithm.version}"[:64]
    ds.ContentCreatorName = ""
    ds.ContributingEquipmentSequence = DataElementSequence(
        contributing_equipment(device, algorithm)
    )
    return ds


def _matrix(matrix: np.ndarray) -> Dataset:
    item = Dataset()
    item.FrameOfReferenceTransformationMatrixType = matrix_type(matrix)
    item.FrameOfReferenceTransformationMatrix = ds_values(np.asarray(matrix, dtype=float).ravel())
    return item


def _matrix_registration(matrix: np.ndarray, method: Code, comment: str | None) -> Dataset:
    item = Dataset()
    if comment:
        item.FrameOfReferenceTransformationComment = comment
    item.RegistrationTypeCodeSequence = DataElementSequence([coded_concept(method)])
    item.MatrixSequence = DataElementSequence([_matrix(matrix)])
    return item


def _image_references(images: Sequence[Dataset]) -> DataElementSequence:
    items = []
    for image in images:
        item = Dataset()
        item.ReferencedSOPClassUID = image.SOPClassUID
        item.ReferencedSOPInstanceUID = image.SOPInstanceUID
        items.append(item)
    return DataElementSequence(items)


def _series_references(images: Sequence[Dataset]) -> DataElementSequence:
    by_series: dict[str, list[Dataset]] = {}
    for image in images:
        by_series.setdefault(str(image.SeriesInstanceUID), []).append(image)
    items = []
    for series_uid, members in by_series.items():
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        item.ReferencedInstanceSequence = _image_references(members)
        items.append(item)
    return DataElementSequence(items)


def _common_instance_reference(
    ds: Dataset, current: Sequence[Dataset], prior: Sequence[Dataset]
) -> None:
    """Common Instance Reference module (PS3.3 C.12.2) for every image referenced."""
    study = str(ds.StudyInstanceUID)
    same_study = [*current, *(image for image in prior if str(image.StudyInstanceUID) == study)]
    if same_study:
        ds.ReferencedSeriesSequence = _series_references(same_study)
    other = [image for image in prior if str(image.StudyInstanceUID) != study]
    if other:
        item = Dataset()
        item.StudyInstanceUID = other[0].StudyInstanceUID
        item.ReferencedSeriesSequence = _series_references(other)
        ds.StudiesContainingOtherReferencedInstancesSequence = DataElementSequence([item])


def grid_steps(
    shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> tuple[int, int, int]:
    """Sampling step (frame, row, column) of the deformation grid (module docstring)."""
    steps = [max(1, int(np.floor(GRID_SPACING_MM / s + 1e-6))) for s in spacing]

    def count(values: list[int]) -> int:
        return int(np.prod([-(-n // v) for n, v in zip(shape, values, strict=True)]))

    while count(steps) > MAX_GRID_VECTORS:
        steps = [v + 1 for v in steps]
    return steps[0], steps[1], steps[2]


def _deformation_grid(stack: SourceStack, deformation: np.ndarray) -> Dataset:
    expected = (3, len(stack.positions), stack.rows, stack.columns)
    if deformation.shape != expected:
        raise EncodingError(
            f"deformation has shape {deformation.shape}, the current grid is {expected}"
        )
    if np.isinf(deformation).any():
        raise EncodingError("deformation has infinite vectors")
    stack.check_regular()
    spacing = (stack.slice_spacing, float(stack.pixel_spacing[0]), float(stack.pixel_spacing[1]))
    steps = grid_steps(expected[1:], spacing)
    sampled = deformation[:, :: steps[0], :: steps[1], :: steps[2]]
    vectors = np.ascontiguousarray(np.moveaxis(sampled, 0, -1), dtype="<f4")
    grid = Dataset()
    grid.ImagePositionPatient = ds_values(stack.positions[0])
    grid.ImageOrientationPatient = ds_values([*stack.row_direction, *stack.column_direction])
    grid.GridDimensions = [int(sampled.shape[3]), int(sampled.shape[2]), int(sampled.shape[1])]
    grid.GridResolution = [
        spacing[2] * steps[2],
        spacing[1] * steps[1],
        spacing[0] * steps[0],
    ]
    grid.VectorGridData = vectors.tobytes()
    return grid
