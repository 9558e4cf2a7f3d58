"""The SEG read the way OHIF reads it: dcmjs's Cornerstone segmentation adapter in Node.js.

``tests/js/seg_labelmap.mjs`` parses the SEG with
``dcmjs.adapters.Cornerstone.Segmentation.generateToolState`` (dcmjs pinned in
``tests/js/package.json``; run ``npm ci`` in ``tests/js`` once) and writes the
label maps it builds; each must equal the pipeline's masks voxel for voxel.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dicom_sr import AlgorithmIdentity, ViewerProfile, write_segmentation
from node.phantom import make_chest_phantom
from pipelines.ct_anatomy import CtAnatomyPipeline
from pipelines.volume import load_volume
from tests.dicom_sr.test_air_conformance import identity

JS_DIR = Path(__file__).resolve().parents[1] / "js"


@pytest.fixture(scope="module")
def node() -> str:
    executable = shutil.which("node")
    if executable is None:
        pytest.skip("Node.js is not installed")
    if not (JS_DIR / "node_modules" / "dcmjs").is_dir():
        pytest.fail("dcmjs is missing: run `npm ci` in tests/js")
    return executable


@pytest.fixture(scope="module")
def chest():
    phantom = make_chest_phantom(n_slices=40, rows=128, columns=128, pixel_spacing=(2.5, 2.5))
    volume = load_volume(phantom.datasets)
    findings = CtAnatomyPipeline().run(volume)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in phantom.datasets}
    sources = [by_uid[uid] for uid in findings.source_sop_instance_uids]
    return sources, findings


def _dcmjs_labelmaps(node, tmp_path, seg, sources):
    seg_path = tmp_path / "seg.dcm"
    seg.save_as(seg_path, enforce_file_format=True)
    paths = []
    for index, ds in enumerate(sources):
        path = tmp_path / f"src{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(str(path))
    prefix = tmp_path / "labelmap"
    subprocess.run(
        [node, str(JS_DIR / "seg_labelmap.mjs"), str(seg_path), str(prefix), *paths],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=JS_DIR,
    )
    meta = json.loads(prefix.with_suffix(".json").read_text())
    shape = (meta["frames"], meta["rows"], meta["columns"])
    maps = [
        np.fromfile(f"{prefix}.{i}.u16", dtype="<u2").reshape(shape)
        for i in range(meta["labelmaps"])
    ]
    return meta, maps


def _assert_same_masks(findings, meta, maps):
    assert [s["number"] for s in meta["segments"]] == [
        s.description.number for s in findings.segments
    ]
    assert [s["label"] for s in meta["segments"]] == [
        s.description.label for s in findings.segments
    ]
    for segment in findings.segments:
        number = segment.description.number
        decoded = np.zeros(segment.mask.shape, dtype=bool)
        for labels in maps:
            decoded |= labels == number
        np.testing.assert_array_equal(decoded, segment.mask, err_msg=segment.description.label)


@pytest.mark.parametrize("omit_empty_frames", [True, False])
def test_dcmjs_label_map_equals_the_masks(node, tmp_path, chest, device, omit_empty_frames):
    sources, findings = chest
    algorithm = AlgorithmIdentity(name=findings.pipeline_name, version=findings.pipeline_version)
    seg = write_segmentation(
        sources,
        findings,
        identity(960),
        device,
        algorithm,
        profile=ViewerProfile(omit_empty_frames=omit_empty_frames),
    )
    meta, maps = _dcmjs_labelmaps(node, tmp_path, seg, sources)
    assert len(findings.segments) >= 3
    _assert_same_masks(findings, meta, maps)


def test_dcmjs_reads_real_ct_slice(
    node, tmp_path, ct_small, build_findings, seg_identity, device, algorithm
):
    findings = build_findings(ct_small)
    seg = write_segmentation(ct_small, findings, seg_identity, device, algorithm)
    meta, maps = _dcmjs_labelmaps(node, tmp_path, seg, ct_small)
    _assert_same_masks(findings, meta, maps)
