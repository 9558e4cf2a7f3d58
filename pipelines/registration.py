"""Registration core of prior-compare: rigid, affine and deformable, with torch.

:func:`register` is instance optimisation with torch, no weights:

1. **Initialisation**: translation aligning the intensity centres of mass.
2. **Rigid** (6 parameters: rotation vector about the fixed volume's centre,
   translation), then **affine** (12 parameters), by Adam on a two-level
   pyramid (6 mm then 3 mm working grids by average pooling, or the source spacing when
   coarser), maximising the global normalised cross-correlation (NCC) of the
   fixed image and the moving image sampled at the transformed positions
   (trilinear, ``torch.nn.functional.grid_sample``). Same-modality only.
3. **Deformable** (optional): a dense displacement field on the 3 mm working
   grid, by Adam on NCC with a diffusion regulariser ``lambda * mean |grad u|^2``,
   then trilinearly upsampled to the current grid.

Conventions: ``matrix`` maps prior (moving) patient coordinates (LPS, mm) to
current (fixed) patient coordinates; the deformation ``u`` (``[3, frame,
row, column]``, mm, LPS, on the current grid) completes it: a current point
``p`` corresponds to the prior point ``inv(matrix) @ p + u(p)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.volume import Volume

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistrationParameters:
    """Optimisation settings of :func:`register`."""

    levels_mm: tuple[float, ...] = (6.0, 3.0)
    rigid_iterations: int = 120
    affine_iterations: int = 80
    deformable_iterations: int = 100
    smoothness: float = 1.0
    learning_rate: float = 0.02


@dataclass(frozen=True, eq=False)
class RegistrationResult:
    """The transform found by :func:`register` (see the module conventions).

    ``matrix`` (4x4) maps moving patient mm to fixed patient mm;
    ``displacement`` is ``None`` or ``[3, frame, row, column]`` mm on the
    fixed grid; ``ncc_before`` / ``ncc_after`` measure the fit (identity
    mapping vs found transform) on the finest working grid.
    """

    matrix: np.ndarray
    displacement: np.ndarray | None
    ncc_before: float
    ncc_after: float


@dataclass(frozen=True)
class _Level:
    """One pyramid level: both images on working grids, with index->mm affines."""

    fixed: torch.Tensor  # [1, 1, D, H, W]
    moving: torch.Tensor
    fixed_points: torch.Tensor  # [D, H, W, 4] homogeneous fixed mm of every working voxel
    moving_inverse: torch.Tensor  # mm -> moving working index
    moving_shape: tuple[int, int, int]


def register(
    fixed: Volume,
    moving: Volume,
    deformable: bool = False,
    parameters: RegistrationParameters | None = None,
) -> RegistrationResult:
    """Register ``moving`` (the prior) onto ``fixed`` (the current volume).

    Returns the moving->fixed matrix and, when ``deformable``, the
    displacement on the fixed grid (module docstring).
    """
    p = parameters or RegistrationParameters()
    levels = [_level(fixed, moving, mm) for mm in p.levels_mm]
    centre = torch.as_tensor(_centre(fixed), dtype=torch.float64)
    translation = torch.as_tensor(
        _centre_of_mass(moving) - _centre_of_mass(fixed), dtype=torch.float64
    )
    rotation = torch.zeros(3, dtype=torch.float64)
    linear = torch.eye(3, dtype=torch.float64)
    finest = levels[-1]
    ncc_before = float(_ncc(finest.fixed, _warp(finest, torch.eye(4, dtype=torch.float64))))
    with torch.enable_grad():
        for level in levels:
            rotation, translation = _optimise_rigid(level, centre, rotation, translation, p)
        linear = _rotation_matrix(rotation).detach()
        for level in levels:
            linear, translation = _optimise_affine(level, centre, linear, translation, p)
        sampling = _sampling_matrix(linear, translation, centre).detach()
        field = _optimise_field(finest, sampling, p) if deformable else None
    ncc_after = float(_ncc(finest.fixed, _warp(finest, sampling, field)))
    matrix = np.linalg.inv(sampling.numpy())
    displacement = _field_on_grid(field, fixed.shape) if field is not None else None
    logger.info("registration NCC %.4f -> %.4f", ncc_before, ncc_after)
    return RegistrationResult(matrix, displacement, ncc_before, ncc_after)


# -- working grids ------------------------------------------------------------------


def _level(fixed: Volume, moving: Volume, mm: float) -> _Level:
    f_tensor, f_affine = _downsample(fixed, mm)
    m_tensor, m_affine = _downsample(moving, mm)
    shape = f_tensor.shape[2:]
    index = torch.stack(
        torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij"),
        dim=-1,
    )
    ones = torch.ones((*shape, 1), dtype=torch.float64)
    return _Level(
        fixed=f_tensor,
        moving=m_tensor,
        fixed_points=torch.cat([index, ones], dim=-1) @ torch.as_tensor(f_affine).T,
        moving_inverse=torch.as_tensor(np.linalg.inv(m_affine)),
        moving_shape=tuple(m_tensor.shape[2:]),  # type: ignore[arg-type]
    )


def _downsample(volume: Volume, mm: float) -> tuple[torch.Tensor, np.ndarray]:
    """Average-pool ``volume`` to about ``mm`` spacing; return it and its index->mm affine."""
    factors = [max(1, int(round(mm / s))) for s in volume.spacing]
    tensor = torch.from_numpy(np.asarray(volume.voxels, dtype=np.float32).copy())[None, None]
    pooled = F.avg_pool3d(tensor, kernel_size=factors, stride=factors, ceil_mode=True)
    affine = volume.affine.copy()
    scale = np.diag([*factors, 1]).astype(float)
    shift = np.eye(4)
    shift[:3, 3] = [(k - 1) / 2.0 for k in factors]  # pooled voxel centre
    return _standardise(pooled), affine @ shift @ scale


def _standardise(image: torch.Tensor) -> torch.Tensor:
    return (image - image.mean()) / (image.std() + 1e-6)


def _centre(volume: Volume) -> np.ndarray:
    index = np.array([(n - 1) / 2.0 for n in volume.shape] + [1.0])
    result: np.ndarray = (volume.affine @ index)[:3]
    return result


def _centre_of_mass(volume: Volume) -> np.ndarray:
    weights = volume.voxels[::2, ::2, ::2].astype(np.float64)
    weights = weights - np.percentile(weights, 5)
    weights[weights < 0] = 0
    total = weights.sum()
    if total <= 0:
        return _centre(volume)
    grids = np.meshgrid(*[np.arange(0, n, 2) for n in volume.shape], indexing="ij")
    index = np.array([float((g * weights).sum() / total) for g in grids] + [1.0])
    result: np.ndarray = (volume.affine @ index)[:3]
    return result


# -- transforms ------------------------------------------------------------------------


def _rotation_matrix(vector: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, differentiable at zero."""
    angle = torch.sqrt((vector**2).sum() + 1e-18)
    axis = vector / angle
    k = torch.zeros(3, 3, dtype=vector.dtype)
    k[0, 1], k[0, 2], k[1, 2] = -axis[2], axis[1], -axis[0]
    k = k - k.T
    eye = torch.eye(3, dtype=vector.dtype)
    return eye + torch.sin(angle) * k + (1 - torch.cos(angle)) * (k @ k)


def _sampling_matrix(
    linear: torch.Tensor, translation: torch.Tensor, centre: torch.Tensor
) -> torch.Tensor:
    """4x4 fixed mm -> moving mm: ``L (p - c) + c + t``."""
    top = torch.cat([linear, (centre - linear @ centre + translation)[:, None]], dim=1)
    bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=linear.dtype)
    return torch.cat([top, bottom], dim=0)


def _warp(level: _Level, sampling: torch.Tensor, field: torch.Tensor | None = None) -> torch.Tensor:
    """The moving image sampled at ``sampling @ p (+ field)`` for every fixed working voxel."""
    to_index = level.moving_inverse @ sampling  # fixed mm -> moving working index
    moving_index = level.fixed_points @ to_index[:3].T
    if field is not None:
        moving_index = (
            moving_index + field.permute(1, 2, 3, 0).double() @ level.moving_inverse[:3, :3].T
        )
    size = torch.tensor(level.moving_shape, dtype=torch.float64)
    normalised = 2.0 * moving_index / (size - 1).clamp(min=1) - 1.0
    grid = normalised.flip(-1)[None].float()  # grid_sample wants (x=column, y=row, z=frame)
    return F.grid_sample(
        level.moving, grid, mode="bilinear", padding_mode="border", align_corners=True
    )


def _ncc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean()
    b = b - b.mean()
    return (a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum() + 1e-12)


def _optimise_rigid(
    level: _Level,
    centre: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    p: RegistrationParameters,
) -> tuple[torch.Tensor, torch.Tensor]:
    rot = rotation.clone().requires_grad_(True)
    trans_scaled = (translation / 10.0).clone().requires_grad_(True)  # cm: comparable step sizes
    optimiser = torch.optim.Adam([rot, trans_scaled], lr=p.learning_rate)
    for _ in range(p.rigid_iterations):
        optimiser.zero_grad()
        sampling = _sampling_matrix(_rotation_matrix(rot), trans_scaled * 10.0, centre)
        loss = -_ncc(level.fixed, _warp(level, sampling))
        torch.autograd.backward(loss)
        optimiser.step()
    return rot.detach(), (trans_scaled * 10.0).detach()


def _optimise_affine(
    level: _Level,
    centre: torch.Tensor,
    linear: torch.Tensor,
    translation: torch.Tensor,
    p: RegistrationParameters,
) -> tuple[torch.Tensor, torch.Tensor]:
    lin = linear.clone().requires_grad_(True)
    trans_scaled = (translation / 10.0).clone().requires_grad_(True)
    optimiser = torch.optim.Adam([lin, trans_scaled], lr=p.learning_rate / 10.0)
    for _ in range(p.affine_iterations):
        optimiser.zero_grad()
        loss = -_ncc(level.fixed, _warp(level, _sampling_matrix(lin, trans_scaled * 10.0, centre)))
        torch.autograd.backward(loss)
        optimiser.step()
    return lin.detach(), (trans_scaled * 10.0).detach()


def _optimise_field(
    level: _Level, sampling: torch.Tensor, p: RegistrationParameters
) -> torch.Tensor:
    """Displacement (mm) on the working grid, regularised by its squared gradient."""
    shape = level.fixed.shape[2:]
    field = torch.zeros((3, *shape), dtype=torch.float32, requires_grad=True)
    optimiser = torch.optim.Adam([field], lr=0.5)
    for _ in range(p.deformable_iterations):
        optimiser.zero_grad()
        similarity = -_ncc(level.fixed, _warp(level, sampling, field))
        smooth = sum((torch.diff(field, dim=d) ** 2).mean() for d in (1, 2, 3))
        loss = similarity + p.smoothness * 0.01 * smooth
        torch.autograd.backward(loss)
        optimiser.step()
    return field.detach()


def _field_on_grid(field: torch.Tensor, shape: tuple[int, int, int]) -> np.ndarray:
    """Trilinear upsampling of the working-grid field to the fixed volume's grid."""
    upsampled = F.interpolate(field[None], size=shape, mode="trilinear", align_corners=True)[0]
    return upsampled.numpy().astype(np.float32)
