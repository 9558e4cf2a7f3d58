"""Between the source grid and a network's grid: orientation, spacing, boxes, precision.

The mapping is exact and invertible so that a segmentation lands on the
source frames:

1. **Orientation** by axis permutation and flips only (no interpolation):
   each network axis (orientation codes such as ``"RAS"``: axis 0 increases
   toward patient Right, 1 toward Anterior, 2 toward Superior, as in
   MONAI's ``Orientation``) takes the source axis whose direction is closest.
2. **Spacing** by linear interpolation with aligned corners: the first and
   last voxel centres of each axis stay where they are, the count becomes
   ``round((n - 1) * spacing / target) + 1``, so the achieved spacing differs
   from the target by less than half a voxel over the extent. Probabilities
   are interpolated back to exactly the source shape with the same mapping,
   then the argmax is taken on the source grid (as MONAI's ``Invertd`` and
   ``AsDiscreted`` do).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.volume import Volume

logger = logging.getLogger(__name__)

_AXIS_OF = {
    "R": (0, 1.0),
    "L": (0, -1.0),
    "A": (1, 1.0),
    "P": (1, -1.0),
    "S": (2, 1.0),
    "I": (2, -1.0),
}


@dataclass(frozen=True)
class Orientation:
    """Source axes ``(frame, row, column)`` -> network axes by permutation and flips.

    ``permutation[k]`` is the source axis that becomes network axis ``k``;
    ``flips[k]`` whether network axis ``k`` runs opposite to it.
    """

    permutation: tuple[int, ...]
    flips: tuple[bool, ...]

    def to_network(self, array: np.ndarray) -> np.ndarray:
        """Reorient the last ``len(permutation)`` axes of ``array``."""
        lead = array.ndim - len(self.permutation)
        out = np.transpose(array, (*range(lead), *(lead + p for p in self.permutation)))
        flip_axes = tuple(lead + k for k, f in enumerate(self.flips) if f)
        return np.flip(out, flip_axes) if flip_axes else out

    def to_source(self, array: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_network`."""
        lead = array.ndim - len(self.permutation)
        flip_axes = tuple(lead + k for k, f in enumerate(self.flips) if f)
        out = np.flip(array, flip_axes) if flip_axes else array
        inverse = np.argsort(self.permutation)
        return np.transpose(out, (*range(lead), *(lead + int(p) for p in inverse)))

    def spacing(self, source_spacing: Sequence[float]) -> tuple[float, ...]:
        """Source spacing in network axis order."""
        return tuple(float(source_spacing[p]) for p in self.permutation)

    def shape(self, source_shape: Sequence[int]) -> tuple[int, ...]:
        """Source shape in network axis order."""
        return tuple(int(source_shape[p]) for p in self.permutation)


IDENTITY_3D = Orientation((0, 1, 2), (False, False, False))
#: 2-D network order as MONAI's ``LoadImage`` gives it: (column, row), i.e. x then y.
PLANAR_2D = Orientation((1, 0), (False, False))


def orientation_for(volume: Volume, axcodes: str | None) -> Orientation:
    """The permutation and flips that bring ``volume`` to ``axcodes`` (``None``: as stored)."""
    if axcodes is None:
        return IDENTITY_3D
    if len(axcodes) != 3 or {_AXIS_OF[c][0] for c in axcodes.upper()} != {0, 1, 2}:
        raise ValueError(f"orientation codes must name three different axes, got {axcodes!r}")
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    directions = (
        np.array([volume.slice_direction, volume.column_direction, volume.row_direction])
        * lps_to_ras
    )  # source axis directions in RAS
    permutation: list[int] = []
    flips: list[bool] = []
    for code in axcodes.upper():
        world_axis, sign = _AXIS_OF[code]
        scores = directions[:, world_axis] * sign
        candidates = [a for a in range(3) if a not in permutation]
        best = max(candidates, key=lambda a: abs(scores[a]))
        permutation.append(best)
        flips.append(bool(scores[best] < 0))
    return Orientation(tuple(permutation), tuple(flips))


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float] | None
) -> tuple[int, ...]:
    """Voxel counts of the network grid for ``target`` spacing (aligned corners)."""
    if target is None:
        return tuple(int(n) for n in shape)
    return tuple(
        max(1, int(round((n - 1) * s / t)) + 1) if n > 1 else 1
        for n, s, t in zip(shape, spacing, target, strict=True)
    )


def resize(tensor: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Linear resize of ``[batch, channel, *spatial]`` with aligned corners."""
    if tuple(tensor.shape[2:]) == tuple(size):
        return tensor
    mode = "trilinear" if tensor.ndim == 5 else "bilinear"
    return F.interpolate(tensor, size=tuple(size), mode=mode, align_corners=True)


def argmax_on_source(probabilities: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Argmax over channels after resizing each channel to ``size``.

    One channel at a time keeps memory at two source-size arrays, whatever
    the number of labels. ``probabilities`` is ``[1, C, *network_spatial]``.
    """
    best = torch.full(tuple(size), -1.0, dtype=torch.float32)
    index = torch.zeros(
        tuple(size), dtype=torch.uint8 if probabilities.shape[1] < 256 else torch.int16
    )
    for channel in range(probabilities.shape[1]):
        values = resize(probabilities[:, channel : channel + 1].float(), size)[0, 0].cpu()
        better = values > best
        best = torch.where(better, values, best)
        index[better] = channel
    return index


def boxes_to_source(
    boxes: np.ndarray,
    network_shape: Sequence[int],
    oriented_shape: Sequence[int],
    orientation: Orientation,
) -> np.ndarray:
    """Map ``[N, 2*d]`` corner boxes (``xyz`` min then max, voxel-edge units) to source indices.

    Network voxel centre ``i`` sits at source (oriented) centre
    ``i * (n_src - 1) / (n_net - 1)``; an edge coordinate ``c`` is the centre
    coordinate ``c - 0.5``. The result is ``[N, 2*d]`` in source
    ``(frame, row, column)`` order, min then max.
    """
    dims = len(network_shape)
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 2 * dims)
    low, high = boxes[:, :dims].copy(), boxes[:, dims:].copy()
    for axis in range(dims):
        n_net, n_src = network_shape[axis], oriented_shape[axis]
        ratio = (n_src - 1) / (n_net - 1) if n_net > 1 else 1.0
        for edges in (low, high):
            edges[:, axis] = (edges[:, axis] - 0.5) * ratio + 0.5
        if orientation.flips[axis]:
            low[:, axis], high[:, axis] = n_src - high[:, axis], n_src - low[:, axis]
    out_low = np.empty_like(low)
    out_high = np.empty_like(high)
    for axis, source_axis in enumerate(orientation.permutation):
        out_low[:, source_axis] = low[:, axis]
        out_high[:, source_axis] = high[:, axis]
    return np.concatenate([out_low, out_high], axis=1)


def best_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is native here (CUDA bf16, or CPU AVX512-BF16 / AMX)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    # torch.backends.mkldnn.is_available carries no annotations
    mkldnn_available = cast(Callable[[], bool], torch.backends.mkldnn.is_available)
    try:
        return bool(mkldnn_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of ``precision`` (``"bf16"`` or ``"fp32"``)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def memory_format(spatial_dims: int) -> torch.memory_format:
    """``channels_last_3d`` for 3-D networks, ``channels_last`` for 2-D."""
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last


def reference_input(shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """A deterministic smooth random image ``[batch, channel, *spatial]`` in about [0, 1].

    Used by the start-up precision self-check: smoothed noise plus a few
    bright blobs, so that the network sees structure, not white noise.
    """
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(tuple(shape), generator=generator)
    pool = F.avg_pool3d if len(shape) == 5 else F.avg_pool2d
    smooth = pool(noise, kernel_size=5, stride=1, padding=2)
    smooth = (smooth - smooth.amin()) / (smooth.amax() - smooth.amin() + 1e-6)
    return smooth.contiguous()


def agreement(
    run: Callable[[str], torch.Tensor], compare: Callable[[torch.Tensor, torch.Tensor], float]
) -> float:
    """Fraction in which bf16 and fp32 outputs agree, by ``compare``."""
    reference = run("fp32")
    candidate = run("bf16")
    return compare(reference, candidate)


def argmax_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of positions (batch and space) where the channel argmax agrees."""
    same = (a > 0) == (b > 0) if a.shape[1] == 1 else a.argmax(dim=1) == b.argmax(dim=1)
    return float(same.float().mean())
