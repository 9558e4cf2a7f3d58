"""Small real MONAI bundles for tests, in the bundle layout, trained on phantoms.

Each builder writes ``configs/metadata.json``, ``configs/inference.json`` and
``models/model.pt`` under a new directory and returns a :class:`BuiltBundle`
(path, SHA-256 of the weights, label map file or ``None``). The networks are
real MONAI networks, trained for a few seconds on synthetic phantoms so their
output is meaningful:

* :func:`build_segmentation_bundle`: 3-D ``UNet`` segmenting a bright sphere
  ("lesion", 200 HU in 0 HU tissue) - labels coded by a YAML label map;
* :func:`build_classification_bundle`: 2-D ``DenseNet`` telling "abnormal"
  (a bright disk present) from "normal" - codes in ``metadata.json``;
* :func:`build_detection_bundle`: 3-D ``RetinaNet`` (ResNet-FPN) detecting a
  bright cube ("nodule").

Phantom helpers: :func:`sphere_phantom`, :func:`disk_image`, :func:`cube_phantom`
and :func:`make_volume` (a :class:`~pipelines.volume.Volume` with given geometry).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from pipelines.monai_bundle import sha256_of
from pipelines.volume import Volume

SEG_WINDOW = {"a_min": -200.0, "a_max": 400.0, "b_min": 0.0, "b_max": 1.0, "clip": True}
LESION_CODES = {
    "category": ["49755003", "SCT", "Morphologically Abnormal Structure"],
    "type": ["52988006", "SCT", "Lesion"],
}
NODULE_CODES = {
    "category": {
        "value": "49755003",
        "scheme": "SCT",
        "meaning": "Morphologically Abnormal Structure",
    },
    "type": {"value": "27925004", "scheme": "SCT", "meaning": "Nodule"},
}
CLASS_CODES = {
    "normal": {
        "category": ["404684003", "SCT", "Clinical finding"],
        "type": ["17621005", "SCT", "Normal"],
    },
    "abnormal": {
        "category": ["404684003", "SCT", "Clinical finding"],
        "type": ["263654008", "SCT", "Abnormal"],
    },
}


@dataclass(frozen=True)
class BuiltBundle:
    """A bundle directory, the SHA-256 of its weights and its label map (if any)."""

    path: Path
    sha256: str
    label_map: Path | None


def make_volume(
    voxels: np.ndarray,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    *,
    modality: str = "CT",
    row_direction: tuple[float, float, float] = (1.0, 0.0, 0.0),
    column_direction: tuple[float, float, float] = (0.0, 1.0, 0.0),
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    planar: bool = False,
    header: dict[str, Any] | None = None,
) -> Volume:
    """A Volume of ``voxels`` with the given geometry (slice direction = row x column)."""
    n = voxels.shape[0]
    normal = tuple(float(v) for v in np.cross(row_direction, column_direction))
    return Volume(
        voxels=np.ascontiguousarray(voxels, dtype=np.float32),
        spacing=spacing,
        origin=origin,
        row_direction=row_direction,
        column_direction=column_direction,
        slice_direction=normal,  # type: ignore[arg-type]
        sop_instance_uids=tuple(f"1.2.826.0.1.3680043.10.1.{k + 1}" for k in range(n)),
        source_frame_numbers=(1,) * n,
        source_indices=tuple(range(n)),
        modality=modality,
        series_instance_uid="1.2.826.0.1.3680043.10.2",
        header=header or {},
        planar=planar,
    )


def sphere_phantom(
    shape: tuple[int, int, int],
    center_mm: tuple[float, float, float],
    radius_mm: float,
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
    noise_hu: float = 20.0,
) -> tuple[np.ndarray, np.ndarray]:
    """HU image (0 HU tissue, 200 HU sphere, Gaussian noise) and the true sphere mask."""
    grids = np.meshgrid(
        *[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
    )
    distance2 = sum((g - c) ** 2 for g, c in zip(grids, center_mm, strict=True))
    mask = distance2 <= radius_mm**2
    image = np.where(mask, 200.0, 0.0) + rng.normal(0.0, noise_hu, shape)
    return image.astype(np.float32), mask


def disk_image(size: int, rng: np.random.Generator, abnormal: bool) -> np.ndarray:
    """A 2-D noisy image in [0, 1000] with a bright disk when ``abnormal``."""
    image = rng.normal(300.0, 30.0, (size, size))
    if abnormal:
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        radius = rng.uniform(size * 0.08, size * 0.15)
        yy, xx = np.mgrid[:size, :size]
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 900.0
    return image.astype(np.float32)


def cube_phantom(
    shape: tuple[int, int, int], corner: tuple[int, int, int], side: int, rng: np.random.Generator
) -> np.ndarray:
    """A noisy image in [0, 1] with a bright cube ``side`` voxels wide at ``corner``."""
    image = rng.normal(0.1, 0.03, shape)
    region = tuple(slice(c, c + side) for c in corner)
    image[region] = 0.9
    return image.astype(np.float32)


def _write_bundle(
    root: Path, metadata: dict[str, Any], inference: dict[str, Any], network: torch.nn.Module
) -> tuple[Path, str]:
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2))
    (root / "configs" / "inference.json").write_text(json.dumps(inference, indent=2))
    weights = root / "models" / "model.pt"
    torch.save(network.state_dict(), weights)
    return root, sha256_of(weights)


def _metadata(
    name: str, inputs: dict[str, Any], outputs: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": "0.1.0",
        "name": name,
        "monai_version": "1.6.1",
        "network_data_format": {"inputs": {"image": inputs}, "outputs": outputs},
        **extra,
    }


# -- segmentation ---------------------------------------------------------------

SEG_NETWORK = {
    "_target_": "UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [8, 16, 32],
    "strides": [2, 2],
    "num_res_units": 1,
}


def build_segmentation_bundle(root: Path, *, steps: int = 80, seed: int = 0) -> BuiltBundle:
    """A 3-D UNet bundle that segments a 200 HU sphere ("lesion"), pixdim 1 mm, RAS."""
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    kwargs = {k: v for k, v in SEG_NETWORK.items() if k != "_target_"}
    network = UNet(**kwargs)  # type: ignore[arg-type]
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    loss_fn = torch.nn.CrossEntropyLoss()
    network.train()
    for _ in range(steps):
        images, targets = [], []
        for _ in range(4):
            center = tuple(rng.uniform(6, 26, 3))
            image, mask = sphere_phantom(
                (32, 32, 32), center, rng.uniform(3, 9), (1.0, 1.0, 1.0), rng
            )
            images.append(_window(image))
            targets.append(mask.astype(np.int64))
        x = torch.from_numpy(np.stack(images))[:, None]
        y = torch.from_numpy(np.stack(targets))
        optimizer.zero_grad()
        loss = loss_fn(network(x), y)
        loss.backward()
        optimizer.step()
    network.eval()
    metadata = _metadata(
        "ainode_test_lesion_ct_segmentation",
        {
            "type": "image",
            "format": "hounsfield",
            "modality": "CT",
            "num_channels": 1,
            "spatial_shape": [32, 32, 32],
            "dtype": "float32",
            "is_patch_data": True,
        },
        {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 2,
                "spatial_shape": [32, 32, 32],
                "dtype": "float32",
                "is_patch_data": True,
                "channel_def": {"0": "background", "1": "lesion"},
            }
        },
    )
    inference = {
        "bundle_root": ".",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": SEG_NETWORK,
        "network": "$@network_def.to(@device)",
        "pixdim": [1.0, 1.0, 1.0],
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
                {"_target_": "Spacingd", "keys": "image", "pixdim": "@pixdim", "mode": "bilinear"},
                {"_target_": "ScaleIntensityRanged", "keys": "image", **SEG_WINDOW},
                {"_target_": "EnsureTyped", "keys": "image"},
            ],
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": [32, 32, 32],
            "sw_batch_size": 2,
            "overlap": 0.25,
        },
    }
    path, digest = _write_bundle(root, metadata, inference, network)
    label_map = root.parent / f"{root.name}-labels.yaml"
    label_map.write_text(yaml.safe_dump({"lesion": LESION_CODES}))
    return BuiltBundle(path, digest, label_map)


def _window(image: np.ndarray) -> np.ndarray:
    w = SEG_WINDOW
    return np.clip((image - w["a_min"]) / (w["a_max"] - w["a_min"]), 0.0, 1.0).astype(np.float32)


# -- classification -------------------------------------------------------------

CLS_NETWORK = {
    "_target_": "DenseNet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 2,
    "init_features": 8,
    "growth_rate": 8,
    "block_config": [2, 2],
    "bn_size": 2,
}


def build_classification_bundle(root: Path, *, steps: int = 60, seed: int = 0) -> BuiltBundle:
    """A 2-D DenseNet bundle: "abnormal" when a bright disk is present, else "normal"."""
    from monai.networks.nets import DenseNet

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    network = DenseNet(**{k: v for k, v in CLS_NETWORK.items() if k != "_target_"})  # type: ignore[arg-type]
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    network.train()
    for _ in range(steps):
        labels = rng.integers(0, 2, 8)
        images = [_min_max(disk_image(64, rng, bool(k))) for k in labels]
        x = torch.from_numpy(np.stack(images))[:, None]
        optimizer.zero_grad()
        loss = loss_fn(network(x), torch.from_numpy(labels))
        loss.backward()
        optimizer.step()
    network.eval()
    metadata = _metadata(
        "ainode_test_disk_classification",
        {
            "type": "image",
            "format": "magnitude",
            "modality": "CR/DX/US",
            "num_channels": 1,
            "spatial_shape": [64, 64],
            "dtype": "float32",
        },
        {
            "pred": {
                "type": "probabilities",
                "format": "classes",
                "num_channels": 2,
                "spatial_shape": [2],
                "dtype": "float32",
                "channel_def": {"0": "normal", "1": "abnormal"},
            }
        },
        label_codes=CLASS_CODES,
    )
    inference = {
        "network_def": CLS_NETWORK,
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "ScaleIntensityd", "keys": "image"},
                {"_target_": "Resized", "keys": "image", "spatial_size": [64, 64]},
            ],
        },
    }
    path, digest = _write_bundle(root, metadata, inference, network)
    return BuiltBundle(path, digest, None)


def _min_max(image: np.ndarray) -> np.ndarray:
    return ((image - image.min()) / (image.max() - image.min())).astype(np.float32)


def _detection_loss(detector: Any, images: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
    """A plain RetinaNet loss (IoU-matched anchors, BCE + smooth L1) without torchvision.

    MONAI's detector training needs torchvision's matcher; this small stand-in
    uses MONAI's own box IoU and box coder.
    """
    from monai.data.box_utils import box_iou

    head = detector.network(images)
    detector.generate_anchors(images, head)
    cls = detector._reshape_maps(head[detector.cls_key])
    reg = detector._reshape_maps(head[detector.box_reg_key])
    total = torch.zeros(())
    for b, gt in enumerate(boxes):
        anchors = detector.anchors[b]
        iou = box_iou(gt, anchors)[0]
        positive = iou >= 0.35
        positive[iou.argmax()] = True
        negative = iou < 0.2
        target = positive.float()[:, None]
        weight = (positive | negative).float()[:, None] * torch.where(positive, 20.0, 1.0)[:, None]
        total = (
            total
            + torch.nn.functional.binary_cross_entropy_with_logits(
                cls[b], target, weight=weight, reduction="sum"
            )
            / weight.sum()
        )
        encoded = detector.box_coder.encode_single(
            gt.expand(int(positive.sum()), -1), anchors[positive]
        )
        total = total + torch.nn.functional.smooth_l1_loss(reg[b][positive], encoded, beta=1 / 9)
    return total


# -- detection ------------------------------------------------------------------


class ConvFeatures(torch.nn.Module):
    """A small two-level convolutional feature extractor for RetinaNet (strides 2 and 4).

    MONAI's ``resnet_fpn_feature_extractor`` needs torchvision, which ainode
    does not install; RetinaNet takes any module with ``out_channels`` that
    returns a list of feature maps.
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 16) -> None:
        from monai.networks.blocks import Convolution

        super().__init__()
        self.out_channels = out_channels
        self.stem = Convolution(spatial_dims, in_channels, out_channels, strides=2, kernel_size=3)
        self.down = Convolution(spatial_dims, out_channels, out_channels, strides=2, kernel_size=3)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        first = self.stem(images)
        return [first, self.down(first)]


DET_NETWORK = {
    "_target_": "monai.apps.detection.networks.retinanet_network.RetinaNet",
    "spatial_dims": 3,
    "num_classes": 1,
    "num_anchors": 1,
    "size_divisible": [8, 8, 8],
    "feature_extractor": {
        "_target_": "bundles.ConvFeatures",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 16,
    },
}
ANCHORS = {
    "_target_": "monai.apps.detection.utils.anchor_utils.AnchorGeneratorWithAnchorShape",
    "feature_map_scales": [1, 2],
    "base_anchor_shapes": [[8, 8, 8]],
}


def build_detection_bundle(root: Path, *, steps: int = 60, seed: int = 0) -> BuiltBundle:
    """A 3-D RetinaNet bundle detecting a bright 8-voxel cube ("nodule"), 1 mm, RAS."""
    from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
    from monai.bundle import ConfigParser

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    parser = ConfigParser({"network_def": DET_NETWORK, "anchor_generator": ANCHORS})
    network = parser.get_parsed_content("network_def")
    detector = RetinaNetDetector(network, parser.get_parsed_content("anchor_generator"))
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    network.train()
    for _ in range(steps):
        corners = [tuple(int(c) for c in rng.integers(2, 22, 3)) for _ in range(2)]
        images = torch.stack(
            [torch.from_numpy(cube_phantom((32, 32, 32), c, 8, rng))[None] for c in corners]
        )
        boxes = [torch.tensor([[*c, *(v + 8 for v in c)]], dtype=torch.float32) for c in corners]
        optimizer.zero_grad()
        _detection_loss(detector, images, boxes).backward()
        optimizer.step()
    network.eval()
    metadata = _metadata(
        "ainode_test_cube_detection",
        {
            "type": "image",
            "format": "hounsfield",
            "modality": "CT",
            "num_channels": 1,
            "spatial_shape": [32, 32, 32],
            "dtype": "float32",
            "is_patch_data": True,
        },
        {
            "box": {
                "type": "box",
                "format": "cornercornercorner",
                "num_channels": 6,
                "spatial_shape": ["n", 6],
                "dtype": "float32",
                "value_range": [-math.inf, math.inf],
            },
            "label": {
                "type": "index",
                "format": "class",
                "num_channels": 1,
                "spatial_shape": ["n"],
                "dtype": "long",
                "channel_def": {"0": "nodule"},
            },
            "label_scores": {
                "type": "probabilities",
                "format": "scores",
                "num_channels": 1,
                "spatial_shape": ["n"],
                "dtype": "float32",
            },
        },
        label_codes={"nodule": NODULE_CODES},
    )
    inference = {
        "network_def": DET_NETWORK,
        "anchor_generator": ANCHORS,
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
                {"_target_": "Spacingd", "keys": "image", "pixdim": [1.0, 1.0, 1.0]},
            ],
        },
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 32], "overlap": 0.25},
    }
    path, digest = _write_bundle(root, metadata, inference, network)
    return BuiltBundle(path, digest, None)
