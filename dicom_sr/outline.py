"""Outlines of segments: key frames, boundary pixels and traced contours.

Shared by the SR writer (a contour OHIF can draw, PS3.3 C.18.6 SCOORD) and
the Secondary Capture writer (outlines burned into the pixels).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

#: Neighbour offsets (row, column), clockwise on screen, starting west.
_DIRECTIONS = ((0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1))
_INDEX = {offset: index for index, offset in enumerate(_DIRECTIONS)}


def frame_areas(mask: np.ndarray) -> np.ndarray:
    """Return the number of mask pixels on each frame of ``[frame, row, column]``."""
    areas: np.ndarray = np.count_nonzero(mask.reshape(mask.shape[0], -1), axis=1)
    return areas


def key_frame(mask: np.ndarray) -> int | None:
    """Return the frame with the largest cross-section, or ``None`` if empty."""
    areas = frame_areas(mask)
    if not areas.any():
        return None
    return int(np.argmax(areas))


def boundary(mask2d: np.ndarray, width: int = 1) -> np.ndarray:
    """Return the pixels of ``mask2d`` on its border, ``width`` pixels thick."""
    inner: np.ndarray = ndimage.binary_erosion(mask2d, iterations=width, border_value=0)
    edge: np.ndarray = mask2d & ~inner
    return edge


def largest_component(mask2d: np.ndarray) -> np.ndarray:
    """Return the largest 8-connected component of ``mask2d``."""
    labels: np.ndarray
    count: int
    labels, count = ndimage.label(mask2d, structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return mask2d.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest: np.ndarray = labels == int(np.argmax(sizes))
    return largest


def trace_contour(mask2d: np.ndarray, max_points: int = 256) -> np.ndarray:
    """Trace the outer boundary of the largest component of ``mask2d``.

    Moore-neighbour tracing over pixel centres, clockwise on screen, starting
    at the top-left pixel; the contour is closed (last point equals first)
    and thinned evenly to at most ``max_points`` points.

    Parameters
    ----------
    mask2d : numpy.ndarray
        Boolean ``[row, column]`` mask with at least one pixel.
    max_points : int
        Upper bound on the number of points returned.

    Returns
    -------
    numpy.ndarray
        ``[n, 2]`` (row, column) pixel indices, ``n >= 2``.
    """
    component = largest_component(mask2d)
    rows, columns = np.nonzero(component)
    if rows.size == 0:
        raise ValueError("cannot trace the contour of an empty mask")
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, columns.min(), columns.max() + 1
    padded = np.pad(component[r0:r1, c0:c1], 1)
    points = _moore(padded)
    points = np.asarray(points, dtype=float) - 1 + (r0, c0)
    if len(points) > max_points - 1:
        step = int(np.ceil(len(points) / (max_points - 1)))
        points = points[::step]
    return np.vstack([points, points[:1]])


def _moore(padded: np.ndarray) -> list[tuple[int, int]]:
    """Moore-neighbour boundary of the single component in ``padded``."""
    rows, columns = np.nonzero(padded)
    start = (int(rows[0]), int(columns[0]))
    contour = [start]
    current, backtrack = start, 0  # the west neighbour of the first pixel is empty
    for _ in range(4 * padded.size):
        found = None
        for k in range(8):
            index = (backtrack + k) % 8
            dr, dc = _DIRECTIONS[index]
            candidate = (current[0] + dr, current[1] + dc)
            if padded[candidate]:
                found = index, candidate
                break
        if found is None:  # an isolated pixel
            return contour
        index, candidate = found
        pr, pc = _DIRECTIONS[(index - 1) % 8]
        previous = (current[0] + pr, current[1] + pc)
        if current == start and len(contour) > 1 and candidate == contour[1]:
            break
        backtrack = _INDEX[(previous[0] - candidate[0], previous[1] - candidate[1])]
        current = candidate
        if current != start:
            contour.append(current)
        elif len(contour) == 1:
            return contour
    return contour
