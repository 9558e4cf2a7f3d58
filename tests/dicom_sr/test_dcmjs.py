"""The SEG read the way OHIF reads it: dcmjs's Cornerstone segmentation adapter in Node.js.

The peer (:mod:`peers.dcmjs`) parses the SEG with
``dcmjs.adapters.Cornerstone.Segmentation.generateToolState`` and writes the
label maps it builds; each must equal the pipeline's masks voxel for voxel.
"""

from __future__ import annotations

import numpy as np
import peers
import pytest

from dicom_sr import AlgorithmIdentity, ViewerProfile, write_segmentation
from node.demo.phantom import make_chest_phantom
from pipelines.ct_anatomy import CtAnatomyPipeline
from pipelines.volume import load_volume
from tests.dicom_sr.test_air_conformance import identity


@pytest.fixture(scope="module")
def node() -> str:
    if peers.dcmjs.node_executable() is None:
        pytest.skip("Node.js is not installed")
    return peers.dcmjs.require_dcmjs()


@pytest.fixture(scope="module")
def chest():
    phantom = make_chest_phantom(n_slices=40, rows=128, columns=128, pixel_spacing=(2.5, 2.5))
    volume = load_volume(phantom.datasets)
    findings = CtAnatomyPipeline().run(volume)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in phantom.datasets}
    sources = [by_uid[uid] for uid in findings.source_sop_instance_uids]
    return sources, findings


def _dcmjs_labelmaps(node, tmp_path, seg, sources):
    return peers.dcmjs.dcmjs_labelmaps(seg, sources, tmp_path)


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
