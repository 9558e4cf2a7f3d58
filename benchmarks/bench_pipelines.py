"""Run time and peak memory of each pipeline at a modality's typical size.

Each case runs in a fresh Python process (so peak RSS is its own): build the
input, then time ``initialize()`` and ``run()``. Usage::

    .venv/bin/python benchmarks/bench_pipelines.py [case ...] [--threads N]

Cases: load-ct (load_volume of 300 single-frame 512x512 CT images),
ct-anatomy, reformat, pet-suv (300x192x192 PET), prior-compare (rigid+affine,
and with deformable), bundle-seg-fp32 / bundle-seg-bf16 (the
spleen_ct_segmentation UNet architecture, random weights, 1.5x1.5x2 mm,
roi 96^3, overlap 0.5), bundle-cls (DenseNet121 on a 2048x2048 DX).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "pipelines")]

CT_SHAPE = (300, 512, 512)
CT_SPACING = (1.0, 0.7, 0.7)


def chest_ct(shape: tuple[int, int, int] = CT_SHAPE, shift_mm: float = 0.0) -> Any:
    """A simple chest-like CT (HU): body, two lungs, a spine, noise."""
    from bundles import make_volume

    rng = np.random.default_rng(0)
    f, r, c = np.ogrid[: shape[0], : shape[1], : shape[2]]
    cr, cc = shape[1] / 2 + shift_mm / CT_SPACING[1], shape[2] / 2
    voxels = np.full(shape, -1000.0, dtype=np.float32)
    body = ((r - cr) / 180.0) ** 2 + ((c - cc) / 230.0) ** 2 <= 1.0
    voxels[np.broadcast_to(body, shape)] = 40.0
    for side in (-1, 1):
        lung = ((r - cr + 10) / 110.0) ** 2 + ((c - cc - side * 110) / 80.0) ** 2 + (
            (f - 150) / 170.0
        ) ** 2 <= 1
        voxels[lung] = -850.0
    spine = ((r - cr - 120) / 25.0) ** 2 + ((c - cc) / 25.0) ** 2 <= 1.0
    voxels[np.broadcast_to(spine, shape)] = 700.0
    voxels += rng.normal(0, 10, shape).astype(np.float32)
    volume = make_volume(voxels, CT_SPACING, origin=(-180.0, -180.0, -150.0))
    return dataclasses.replace(volume, sop_class_uid="1.2.840.10008.5.1.4.1.1.2")


def _spleen_bundle(root: Path) -> tuple[Path, str, Path]:
    import json as _json

    import torch
    import yaml
    from monai.networks.nets import UNet

    from pipelines.monai_bundle import sha256_of

    net = {
        "_target_": "UNet",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 2,
        "channels": [16, 32, 64, 128, 256],
        "strides": [2, 2, 2, 2],
        "num_res_units": 2,
        "norm": "batch",
    }
    torch.manual_seed(0)
    network = UNet(**{k: v for k, v in net.items() if k != "_target_"})  # type: ignore[arg-type]
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "metadata.json").write_text(
        _json.dumps(
            {
                "version": "0.5.9",
                "name": "spleen_ct_segmentation_like",
                "network_data_format": {
                    "inputs": {
                        "image": {
                            "type": "image",
                            "modality": "CT",
                            "num_channels": 1,
                            "spatial_shape": [96, 96, 96],
                        }
                    },
                    "outputs": {
                        "pred": {
                            "type": "image",
                            "format": "segmentation",
                            "num_channels": 2,
                            "channel_def": {"0": "background", "1": "spleen"},
                        }
                    },
                },
            }
        )
    )
    (root / "configs" / "inference.json").write_text(
        _json.dumps(
            {
                "network_def": net,
                "preprocessing": {
                    "_target_": "Compose",
                    "transforms": [
                        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
                        {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0]},
                        {
                            "_target_": "ScaleIntensityRanged",
                            "keys": "image",
                            "a_min": -57,
                            "a_max": 164,
                            "b_min": 0.0,
                            "b_max": 1.0,
                            "clip": True,
                        },
                    ],
                },
                "inferer": {
                    "_target_": "SlidingWindowInferer",
                    "roi_size": [96, 96, 96],
                    "sw_batch_size": 4,
                    "overlap": 0.5,
                },
            }
        )
    )
    torch.save(network.state_dict(), root / "models" / "model.pt")
    labels = root / "labels.yaml"
    labels.write_text(
        yaml.safe_dump(
            {
                "spleen": {
                    "category": ["91723000", "SCT", "Anatomical Structure"],
                    "type": ["78961009", "SCT", "Spleen"],
                }
            }
        )
    )
    return root, sha256_of(root / "models" / "model.pt"), labels


def _densenet_bundle(root: Path) -> tuple[Path, str]:
    import json as _json

    import torch
    from monai.networks.nets import DenseNet121

    from pipelines.monai_bundle import sha256_of

    torch.manual_seed(0)
    network = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    codes = {
        k: {"category": ["404684003", "SCT", "Clinical finding"], "type": v}
        for k, v in {
            "normal": ["17621005", "SCT", "Normal"],
            "abnormal": ["263654008", "SCT", "Abnormal"],
        }.items()
    }
    (root / "configs" / "metadata.json").write_text(
        _json.dumps(
            {
                "version": "1.0.0",
                "name": "densenet_dx",
                "label_codes": codes,
                "network_data_format": {
                    "inputs": {
                        "image": {
                            "type": "image",
                            "modality": "DX",
                            "num_channels": 1,
                            "spatial_shape": [224, 224],
                        }
                    },
                    "outputs": {
                        "pred": {
                            "type": "probabilities",
                            "format": "classes",
                            "num_channels": 2,
                            "channel_def": {"0": "normal", "1": "abnormal"},
                        }
                    },
                },
            }
        )
    )
    (root / "configs" / "inference.json").write_text(
        _json.dumps(
            {
                "network_def": {
                    "_target_": "DenseNet121",
                    "spatial_dims": 2,
                    "in_channels": 1,
                    "out_channels": 2,
                },
                "preprocessing": {
                    "_target_": "Compose",
                    "transforms": [{"_target_": "ScaleIntensityd", "keys": "image"}],
                },
            }
        )
    )
    torch.save(network.state_dict(), root / "models" / "model.pt")
    return root, sha256_of(root / "models" / "model.pt")


def _ct_datasets() -> list[Any]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    volume = chest_ct()
    stored = np.clip(volume.voxels + 1024, 0, 4095).astype(np.uint16)
    series, frame = generate_uid(), generate_uid()
    out = []
    for k in range(stored.shape[0]):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, generate_uid(), "CT"
        ds.SeriesInstanceUID, ds.FrameOfReferenceUID = series, frame
        ds.ImagePositionPatient = [-180.0, -180.0, -150.0 + k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1:]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = stored[k].tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        out.append(ds)
    return out


def run_case(case: str) -> dict[str, Any]:
    """Build the input, then time initialize() and run() of one case."""
    tmp = Path(tempfile.mkdtemp())
    extra: dict[str, Any] = {}
    if case == "load-ct":
        from pipelines.volume import load_volume

        datasets = _ct_datasets()
        t0 = time.perf_counter()
        load_volume(datasets)
        return {"init_s": 0.0, "run_s": time.perf_counter() - t0, "size": "300x512x512"}
    if case in ("ct-anatomy", "reformat", "prior-compare", "prior-compare-deformable"):
        volume = chest_ct()
    if case == "ct-anatomy":
        from pipelines.ct_anatomy import CtAnatomyPipeline as cls

        pipeline: Any = cls()
    elif case == "reformat":
        from pipelines.reformat import ReformatPipeline

        pipeline = ReformatPipeline()
    elif case == "pet-suv":
        from pet_phantom import HotSphere, PetPhantom, make_pet_series

        from pipelines.pet_suv import PetSuvPipeline
        from pipelines.volume import load_volume

        spheres = tuple(HotSphere((200.0 + 60 * k, 380.0, 380.0), 15.0, 6.0 + k) for k in range(5))
        volume = load_volume(
            make_pet_series(
                PetPhantom(shape=(300, 192, 192), spacing=(3.0, 4.0, 4.0), spheres=spheres)
            )
        )
        pipeline = PetSuvPipeline()
    elif case.startswith("prior-compare"):
        from pipelines.prior_compare import PriorComparePipeline, PriorSeries

        prior = PriorSeries(chest_ct(shift_mm=6.0), "1.2", "1.2.3", "1.2.3.4")
        pipeline = PriorComparePipeline(deformable=case.endswith("deformable"))
        t0 = time.perf_counter()
        findings = pipeline.run_with_prior(volume, prior)
        return {"init_s": 0.0, "run_s": time.perf_counter() - t0, "notes": list(findings.notes)}
    elif case.startswith("bundle-seg"):
        from pipelines.monai_bundle import MonaiBundlePipeline

        path, digest, labels = _spleen_bundle(tmp / "spleen")
        volume = chest_ct()
        precision = case.rsplit("-", 1)[1]
        pipeline = MonaiBundlePipeline.configured(
            "spleen", path, digest, labels, precision=precision
        )()
    elif case == "bundle-cls":
        from bundles import make_volume

        from pipelines.monai_bundle import MonaiBundlePipeline

        path, digest = _densenet_bundle(tmp / "dx")
        volume = make_volume(
            np.random.default_rng(0).normal(1000, 100, (1, 2048, 2048)),
            (1.0, 0.14, 0.14),
            modality="DX",
            planar=True,
        )
        pipeline = MonaiBundlePipeline.configured("dx", path, digest)()
    else:
        raise SystemExit(f"unknown case {case}")
    t0 = time.perf_counter()
    pipeline.initialize()
    t1 = time.perf_counter()
    findings = pipeline.run(volume)
    t2 = time.perf_counter()
    if hasattr(pipeline, "precision"):
        extra["precision"] = pipeline.precision
        extra["agreement"] = pipeline.agreement
    extra["size"] = "x".join(str(n) for n in volume.shape)
    extra["segments"] = len(findings.segments)
    return {"init_s": t1 - t0, "run_s": t2 - t1, **extra}


CASES = (
    "load-ct",
    "ct-anatomy",
    "reformat",
    "pet-suv",
    "bundle-cls",
    "bundle-seg-fp32",
    "bundle-seg-bf16",
    "prior-compare",
    "prior-compare-deformable",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("cases", nargs="*", default=list(CASES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        result = run_case(args.cases[0])
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        sys.stdout.write(json.dumps(result) + "\n")
        return
    for case in args.cases:
        proc = subprocess.run(
            [sys.executable, __file__, case, "--child", "--threads", str(args.threads)],
            capture_output=True,
            text=True,
            check=False,
        )
        line = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 else proc.stderr[-500:]
        sys.stdout.write(f"{case:26s} {line}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
