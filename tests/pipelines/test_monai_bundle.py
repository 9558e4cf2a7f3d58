"""monai-bundle: real (tiny, phantom-trained) MONAI bundles end to end, and refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from bundles import (
    BuiltBundle,
    build_classification_bundle,
    build_detection_bundle,
    build_segmentation_bundle,
    cube_phantom,
    disk_image,
    make_volume,
    sphere_phantom,
)

from pipelines import bundle_grid as grid
from pipelines.errors import InputError, PipelineError
from pipelines.monai_bundle import MonaiBundlePipeline


@pytest.fixture(scope="session")
def bundle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundles")


@pytest.fixture(scope="session")
def seg_bundle(bundle_root: Path) -> BuiltBundle:
    return build_segmentation_bundle(bundle_root / "seg", steps=60)


@pytest.fixture(scope="session")
def cls_bundle(bundle_root: Path) -> BuiltBundle:
    return build_classification_bundle(bundle_root / "cls")


@pytest.fixture(scope="session")
def det_bundle(bundle_root: Path) -> BuiltBundle:
    return build_detection_bundle(bundle_root / "det", steps=40)


def _pipeline(bundle: BuiltBundle, **options: object) -> MonaiBundlePipeline:
    cls = MonaiBundlePipeline.configured(
        "test-bundle", bundle.path, bundle.sha256, bundle.label_map, **options
    )  # type: ignore[arg-type]
    pipeline = cls()
    pipeline.initialize()
    return pipeline


def _copy(bundle: BuiltBundle, tmp_path: Path) -> BuiltBundle:
    target = tmp_path / bundle.path.name
    shutil.copytree(bundle.path, target)
    return BuiltBundle(target, bundle.sha256, bundle.label_map)


# -- segmentation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("row_direction", "column_direction"),
    [((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)), ((-1.0, 0.0, 0.0), (0.0, 0.0, -1.0))],
    ids=["axial", "flipped-coronal"],
)
def test_segmentation_lands_on_the_source_grid(
    seg_bundle: BuiltBundle,
    row_direction: tuple[float, float, float],
    column_direction: tuple[float, float, float],
) -> None:
    """Anisotropic spacing (resampled to 1 mm) and a reoriented stack: the mask fits the truth."""
    spacing = (2.0, 0.8, 0.8)
    image, truth = sphere_phantom(
        (30, 60, 70), (30.0, 20.0, 30.0), 8.0, spacing, np.random.default_rng(3)
    )
    volume = make_volume(
        image, spacing, row_direction=row_direction, column_direction=column_direction
    )
    pipeline = _pipeline(seg_bundle)
    findings = pipeline.run(volume)
    (segment,) = findings.segments
    assert segment.mask.shape == volume.shape
    dice = 2 * np.count_nonzero(segment.mask & truth) / (segment.mask.sum() + truth.sum())
    assert dice > 0.93
    assert segment.description.property_type.meaning == "Lesion"
    assert segment.description.category.value == "49755003"
    volume_ml = findings.measurements[0]
    assert volume_ml.value == pytest.approx(segment.mask.sum() * volume.voxel_volume_ml)
    assert findings.pipeline_name == "test-bundle" and findings.pipeline_version == "0.1.0"
    assert findings.source_sop_instance_uids == volume.sop_instance_uids


def test_configured_class_carries_identity(seg_bundle: BuiltBundle) -> None:
    cls = MonaiBundlePipeline.configured(
        "lesion-ct", seg_bundle.path, seg_bundle.sha256, seg_bundle.label_map
    )
    assert cls.name == "lesion-ct"
    assert cls.version == "0.1.0"
    assert cls.model_checksum == f"sha256:{seg_bundle.sha256}"
    assert cls.accepts.modalities == frozenset({"CT"}) and cls.accepts.dimensions == 3
    assert issubclass(cls, MonaiBundlePipeline) and cls is not MonaiBundlePipeline


def test_precision_is_chosen_by_the_self_check(seg_bundle: BuiltBundle) -> None:
    forced = _pipeline(seg_bundle, precision="fp32")
    assert forced.precision == "fp32" and forced.agreement is None
    if not grid.bf16_supported(forced.device):
        pytest.skip("bf16 not native on this device")
    lenient = _pipeline(seg_bundle, agreement_threshold=0.0)
    assert lenient.precision == "bf16" and lenient.agreement is not None
    strict = _pipeline(seg_bundle, agreement_threshold=1.0)
    assert strict.precision == ("bf16" if strict.agreement == 1.0 else "fp32")


def test_bf16_and_fp32_segmentations_agree(seg_bundle: BuiltBundle) -> None:
    spacing = (1.0, 1.0, 1.0)
    image, _ = sphere_phantom(
        (32, 40, 40), (16.0, 20.0, 20.0), 7.0, spacing, np.random.default_rng(4)
    )
    volume = make_volume(image, spacing)
    fp32 = _pipeline(seg_bundle, precision="fp32").run(volume).segments[0].mask
    if not grid.bf16_supported(grid.best_device()):
        pytest.skip("bf16 not native on this device")
    bf16 = _pipeline(seg_bundle, precision="bf16").run(volume).segments[0].mask
    assert np.mean(fp32 == bf16) >= 0.999


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_when_present(seg_bundle: BuiltBundle) -> None:
    assert _pipeline(seg_bundle).device.type == "cuda"


# -- classification ----------------------------------------------------------------


def test_classification_of_planar_images(cls_bundle: BuiltBundle) -> None:
    pipeline = _pipeline(cls_bundle)
    assert pipeline.accepts.dimensions == 2
    rng = np.random.default_rng(11)
    for k in range(6):
        abnormal = bool(k % 2)
        volume = make_volume(
            disk_image(64, rng, abnormal)[None], (1.0, 0.2, 0.2), modality="DX", planar=True
        )
        (result,) = pipeline.run(volume).classifications
        assert result.value.meaning == ("Abnormal" if abnormal else "Normal")
        assert result.concept.value == "404684003"
        assert result.probability is not None and result.probability > 0.6


def test_classification_refuses_a_stack(cls_bundle: BuiltBundle) -> None:
    pipeline = _pipeline(cls_bundle)
    with pytest.raises(InputError, match="exactly one frame"):
        pipeline.check_input(make_volume(np.zeros((3, 64, 64)), modality="US", planar=True))


def test_classification_inverts_monochrome1(cls_bundle: BuiltBundle) -> None:
    """A MONOCHROME1 radiograph is inverted before the network sees it."""
    pipeline = _pipeline(cls_bundle)
    image = disk_image(64, np.random.default_rng(2), True)
    inverted = image.max() + image.min() - image
    volume = make_volume(
        inverted[None],
        modality="CR",
        planar=True,
        header={"PhotometricInterpretation": "MONOCHROME1"},
    )
    assert pipeline.run(volume).classifications[0].value.meaning == "Abnormal"


# -- detection -------------------------------------------------------------------------


def test_detection_boxes_in_source_voxels(det_bundle: BuiltBundle) -> None:
    image = cube_phantom((40, 48, 56), (10, 20, 30), 8, np.random.default_rng(7))
    volume = make_volume(image, (1.0, 1.0, 1.0))
    findings = _pipeline(det_bundle).run(volume)
    best = findings.detections[0]
    assert best.label == "nodule" and best.finding.value == "27925004"
    assert best.score > 0.5
    np.testing.assert_allclose(best.box_min, (10, 20, 30), atol=2.0)
    np.testing.assert_allclose(best.box_max, (18, 28, 38), atol=2.0)


def test_box_mapping_undoes_orientation_and_spacing() -> None:
    """A network-grid box maps back through flips, permutation and resampling."""
    orientation = grid.Orientation((2, 0, 1), (True, False, False))
    oriented_shape = (21, 11, 31)  # source (11, 31, 21) permuted
    network_shape = (41, 11, 31)  # axis 0 resampled 2x
    box = np.array([[10.5, 2.0, 3.0, 20.5, 4.0, 6.0]])
    (source,) = grid.boxes_to_source(box, network_shape, oriented_shape, orientation)
    # axis 0 (from source axis 2, flipped): edges 10.5 -> 5.5, 20.5 -> 10.5, flipped in 21
    assert source[2] == pytest.approx(21 - 10.5) and source[5] == pytest.approx(21 - 5.5)
    assert (source[0], source[3]) == pytest.approx((2.0, 4.0))
    assert (source[1], source[4]) == pytest.approx((3.0, 6.0))


def test_orientation_round_trip() -> None:
    volume = make_volume(
        np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4),
        row_direction=(0.0, 1.0, 0.0),
        column_direction=(0.0, 0.0, -1.0),
    )
    orientation = grid.orientation_for(volume, "RAS")
    oriented = orientation.to_network(volume.voxels)
    np.testing.assert_array_equal(orientation.to_source(oriented), volume.voxels)
    # slice normal = row x column = (-1, 0, 0): toward patient right, so R is the frame axis
    assert orientation.permutation[0] == 0 and not orientation.flips[0]


# -- refusals ------------------------------------------------------------------------------


def test_checksum_mismatch_refuses_to_load(seg_bundle: BuiltBundle) -> None:
    cls = MonaiBundlePipeline.configured("bad", seg_bundle.path, "0" * 64, seg_bundle.label_map)
    with pytest.raises(PipelineError, match="SHA-256 .* refusing to load"):
        cls().initialize()


def test_malformed_checksum_is_refused(seg_bundle: BuiltBundle) -> None:
    with pytest.raises(PipelineError, match="64 hex digits"):
        MonaiBundlePipeline.configured("bad", seg_bundle.path, "abc", seg_bundle.label_map)


def test_unmapped_label_is_an_error_at_start_up(seg_bundle: BuiltBundle) -> None:
    with pytest.raises(PipelineError, match="lesion have no codes"):
        MonaiBundlePipeline.configured("bad", seg_bundle.path, seg_bundle.sha256, None)


def test_label_map_with_a_bad_code_is_refused(seg_bundle: BuiltBundle, tmp_path: Path) -> None:
    label_map = tmp_path / "labels.json"
    label_map.write_text(
        json.dumps({"lesion": {"category": ["1", "SCT"], "type": ["2", "SCT", "x"]}})
    )
    with pytest.raises(PipelineError, match="code"):
        MonaiBundlePipeline.configured("bad", seg_bundle.path, seg_bundle.sha256, label_map)


def test_weights_that_do_not_fit_are_refused(seg_bundle: BuiltBundle, tmp_path: Path) -> None:
    copy = _copy(seg_bundle, tmp_path)
    weights = copy.path / "models" / "model.pt"
    torch.save({"not": torch.zeros(1)}, weights)
    from pipelines.monai_bundle import sha256_of

    cls = MonaiBundlePipeline.configured("bad", copy.path, sha256_of(weights), copy.label_map)
    with pytest.raises(PipelineError, match="do not fit"):
        cls().initialize()


def test_pickled_code_in_weights_is_refused(seg_bundle: BuiltBundle, tmp_path: Path) -> None:
    """weights_only=True: a checkpoint holding arbitrary objects is not unpickled."""
    copy = _copy(seg_bundle, tmp_path)
    weights = copy.path / "models" / "model.pt"
    torch.save({"model": Path("x")}, weights)
    from pipelines.monai_bundle import sha256_of

    cls = MonaiBundlePipeline.configured("bad", copy.path, sha256_of(weights), copy.label_map)
    with pytest.raises(PipelineError, match="loaded safely"):
        cls().initialize()


def test_unconfigured_type_cannot_initialise() -> None:
    with pytest.raises(PipelineError, match="pipeline type"):
        MonaiBundlePipeline().initialize()


def test_missing_metadata_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="metadata.json is missing"):
        MonaiBundlePipeline.configured("bad", tmp_path, "0" * 64)
