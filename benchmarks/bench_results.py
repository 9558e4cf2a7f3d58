"""Benchmark dicom_sr result writing (not a test: it measures, it never asserts).

For a synthetic 300-slice 512x512 CT (metadata-only slices plus pixel data
for the frames the fallbacks render) with 5 segments and measurements, times
each writer and the whole ``write_results`` call, the encoded sizes, and the
peak memory (tracemalloc for Python allocations, max RSS for the process).

Run: ``.venv/bin/python benchmarks/bench_results.py [--slices 300] [--size 512]``.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydicom.uid import JPEG2000Lossless

from dicom_sr import (
    AlgorithmIdentity,
    DeviceIdentity,
    ResultIdentity,
    SegmentationType,
    ViewerProfile,
    write_pdf_report,
    write_results,
    write_secondary_captures,
    write_segmentation,
)
from dicom_sr.sr import write_measurement_report
from pipelines.findings import Code, Findings, Measurement, Segment, SegmentDescription
from tests.dicom_sr.conftest import _ct_slice

STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
VOLUME = Code("118565006", "SCT", "Volume")
ML = Code("mL", "UCUM", "milliliter")
COLOURS = [(177, 122, 101), (0, 151, 206), (241, 214, 145), (216, 101, 79), (128, 174, 128)]


def _series(n: int, size: int) -> list:
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    slices = []
    for index in range(n):
        ds = _ct_slice(index, study, series, frame_of_reference)
        ds.Rows = ds.Columns = size
        ds.PixelData = np.full((size, size), 1000 + index % 50, dtype=np.int16).tobytes()
        slices.append(ds)
    return slices


def _findings(slices: list, size: int) -> Findings:
    n = len(slices)
    r, c = np.mgrid[:size, :size]
    segments, measurements = [], []
    for k in range(5):
        disc = (r - size * (0.3 + 0.1 * k)) ** 2 + (c - size * (0.3 + 0.1 * k)) ** 2 < (
            size * 0.06
        ) ** 2
        mask = np.zeros((n, size, size), dtype=bool)
        mask[n // 10 * k : n // 10 * k + n // 3] = disc
        description = SegmentDescription(
            k + 1,
            f"Structure {k + 1}",
            STRUCTURE,
            Code("39607008", "SCT", "Lung"),
            f"s{k + 1}",
            color_rgb=COLOURS[k],
        )
        segments.append(Segment(description, mask))
        measurements.append(
            Measurement(VOLUME, float(mask.sum()) * 0.001, ML, segment_number=k + 1)
        )
    return Findings(
        "bench",
        "1.0",
        tuple(str(s.SOPInstanceUID) for s in slices),
        tuple(segments),
        tuple(measurements),
    )


def _identity(number: int) -> ResultIdentity:
    return ResultIdentity(
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        series_number=number,
        series_description=f"bench {number}",
    )


def _timed(label: str, results: dict, fn, *, trace: bool = False):
    """Time ``fn``; with ``trace`` also its peak Python allocations (tracemalloc slows it)."""
    start = time.perf_counter()
    value = fn()
    results[label] = {"seconds": round(time.perf_counter() - start, 3)}
    if trace:
        tracemalloc.start()
        fn()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        results[label]["python_peak_mb_beyond_inputs"] = round(peak / 2**20, 1)
    return value


def _size(datasets) -> float:
    total = 0
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        total += buffer.tell()
    return round(total / 2**20, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    slices = _series(args.slices, args.size)
    findings = _findings(slices, args.size)
    device = DeviceIdentity(software_versions="bench", device_serial_number="bench")
    algorithm = AlgorithmIdentity(name="bench", version="1.0")
    results: dict = {"slices": args.slices, "size": args.size, "segments": 5}
    seg = _timed(
        "seg",
        results,
        lambda: write_segmentation(slices, findings, _identity(1), device, algorithm),
    )
    # the other viewer profiles a destination may ask for (one more SEG each)
    profiles = {
        "seg_labelmap": ViewerProfile(segmentation_type=SegmentationType.LABELMAP),
        "seg_fractional_all_frames": ViewerProfile(
            segmentation_type=SegmentationType.FRACTIONAL, omit_empty_frames=False
        ),
        "seg_binary_jpeg2000": ViewerProfile(transfer_syntax_uid=JPEG2000Lossless),
    }
    profile_sizes = {}
    for label, profile in profiles.items():
        other = _timed(
            label,
            results,
            lambda profile=profile: write_segmentation(
                slices, findings, _identity(1), device, algorithm, profile=profile
            ),
        )
        profile_sizes[label] = _size([other])
    sr = _timed(
        "sr",
        results,
        lambda: write_measurement_report(slices, findings, seg, _identity(2), device, algorithm),
    )
    sc = _timed(
        "sc_key_slices",
        results,
        lambda: write_secondary_captures(slices, findings, _identity(3), device, algorithm),
    )
    pdf = _timed(
        "pdf", results, lambda: write_pdf_report(slices, findings, _identity(4), device, algorithm)
    )
    results["sizes_mb"] = {
        "seg": _size([seg]),
        "sr": _size([sr]),
        "sc": _size(sc),
        "pdf": _size([pdf]),
        **profile_sizes,
    }
    results["sc_images"] = len(sc)
    ids = {name: _identity(10 + i) for i, name in enumerate(("seg", "sr", "sc", "pdf", "ko"))}
    _timed(
        "write_results(seg,sr,sc,pdf,ko)",
        results,
        lambda: write_results(
            slices, findings, device=device, algorithm=algorithm, formats=tuple(ids), identities=ids
        ),
        trace=True,
    )
    results["input_mb"] = round(
        (sum(s.mask.nbytes for s in findings.segments) + sum(len(ds.PixelData) for ds in slices))
        / 2**20,
        1,
    )
    results["process_max_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
