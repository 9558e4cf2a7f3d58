"""Every modality through the node: PT (pet-suv) and DX (a classification bundle).

The inputs are sent by real C-STORE; the results are the objects the node
writes (checked with dciodvfy and highdicom), so this covers loading,
routing, the pipeline and the writers for modalities other than CT.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import peers
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from node.db.models import JobState
from node.demo.scu import send_datasets

TESTS = Path(__file__).resolve().parent.parent


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(
        f"ainode_test_{name}", TESTS / "pipelines" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _items(ds: Any) -> list[Any]:
    """Every content item of an SR document, depth first."""
    found = []
    for item in ds.get("ContentSequence", []):
        found.append(item)
        found.extend(_items(item))
    return found


def _job(node: Any, timeout: float = 240) -> Any:
    final = {JobState.SUCCEEDED, JobState.FAILED}
    return peers.wait_for(
        lambda: next((j for j in node.store.list_jobs() if j.state in final), None),
        timeout=timeout,
        what="the job to finish",
    )


def _outputs(node: Any, job_id: int) -> dict[str, Path]:
    found = node.store.get_job(job_id)
    assert found is not None
    return {o.kind: Path(o.path) for o in found[0].outputs}


def test_pet_series_gets_suv_seg_and_report(make_node: Callable[..., Any], sqlite_url: str) -> None:
    datasets = _load("pet_phantom").make_pet_series()
    node = make_node(
        sqlite_url,
        http=False,
        routes=[{"name": "pet", "match": {"Modality": "PT"}, "pipelines": ["pet-suv"]}],
    )
    send_datasets(datasets, "127.0.0.1", node.dicom_port, "AINODE", "PETSCU")
    job = _job(node)
    assert job.state is JobState.SUCCEEDED, job.error
    outputs = _outputs(node, job.id)
    assert {"SEG", "SR"} <= set(outputs)
    for path in (outputs["SEG"], outputs["SR"]):
        peers.assert_dciodvfy_clean(path)
    report = hd.sr.srread(outputs["SR"])
    names = {
        item.ConceptNameCodeSequence[0].CodeMeaning
        for item in _items(report)
        if item.ValueType == "NUM"
    }
    assert any("SUV" in n or "Standardized" in n for n in names), names


def _dx_image(abnormal: bool, seed: int) -> Dataset:
    pixels = (
        _load("bundles").disk_image(64, np.random.default_rng(seed), abnormal).astype(np.uint16)
    )
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = (
        "1.2.840.10008.5.1.4.1.1.1.1"  # DX for presentation
    )
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
        "PHANTOM^DX",
        "AINODE-DX-1",
        "",
        "O",
    )
    now = datetime(2026, 1, 2, 3, 4, 5)
    ds.StudyDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "1"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "DX", 1, 1
    ds.Manufacturer, ds.PatientOrientation, ds.BodyPartExamined = "phantom", ["L", "F"], "CHEST"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType, ds.BurnedInAnnotation = "FOR PRESENTATION", "NO"
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.WindowCenter, ds.WindowWidth = 600, 1200
    ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LIN", 1
    ds.PixelData = pixels.tobytes()
    return ds


@pytest.mark.slow
def test_dx_image_classified_by_a_configured_bundle(
    make_node: Callable[..., Any], sqlite_url: str, tmp_path: Path
) -> None:
    bundle = _load("bundles").build_classification_bundle(tmp_path / "cls", steps=60)
    node = make_node(
        sqlite_url,
        http=False,
        pipelines={
            "chest-xray-cls": {
                "type": "monai-bundle",
                "path": str(bundle.path),
                "sha256": bundle.sha256,
            }
        },
        routes=[
            {"name": "dx", "match": {"Modality": ["CR", "DX"]}, "pipelines": ["chest-xray-cls"]}
        ],
    )
    send_datasets(
        [_dx_image(abnormal=True, seed=7)], "127.0.0.1", node.dicom_port, "AINODE", "DXSCU"
    )
    job = _job(node)
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.model_checksum == f"sha256:{bundle.sha256}"
    outputs = _outputs(node, job.id)
    assert "SR" in outputs
    peers.assert_dciodvfy_clean(outputs["SR"])
    report = hd.sr.srread(outputs["SR"])
    coded = [
        item.ConceptCodeSequence[0].CodeMeaning
        for item in _items(report)
        if item.ValueType == "CODE"
    ]
    probabilities = [
        float(item.MeasuredValueSequence[0].NumericValue)
        for item in _items(report)
        if item.ValueType == "NUM" and "robab" in item.ConceptNameCodeSequence[0].CodeMeaning
    ]
    assert probabilities and all(0.0 <= p <= 1.0 for p in probabilities)
    assert coded


@pytest.mark.slow
def test_ct_nodule_detected_by_a_configured_detection_bundle(
    make_node: Callable[..., Any], sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from node.demo.phantom import make_chest_phantom

    # the test bundle's network_def names its feature extractor as ``bundles.ConvFeatures``:
    # the node's worker processes (spawned after this) must be able to import it
    monkeypatch.setattr(sys, "path", [*sys.path, str(TESTS / "pipelines")])
    import bundles

    bundle = bundles.build_detection_bundle(tmp_path / "det")
    image = bundles.cube_phantom((40, 48, 56), (10, 20, 30), 8, np.random.default_rng(7))
    template = make_chest_phantom(
        n_slices=40, rows=48, columns=56, pixel_spacing=(1.0, 1.0), slice_thickness=1.0
    )
    datasets = sorted(template.datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))
    for k, ds in enumerate(datasets):  # the bundle's intensities, stored with slope 0.001
        ds.RescaleIntercept, ds.RescaleSlope = 0, 0.001
        ds.BitsStored, ds.HighBit = 16, 15
        ds.PixelData = np.clip(np.round(image[k] * 1000), 0, 65535).astype(np.uint16).tobytes()
    node = make_node(
        sqlite_url,
        http=False,
        pipelines={
            "nodule-det": {
                "type": "monai-bundle",
                "path": str(bundle.path),
                "sha256": bundle.sha256,
            }
        },
        routes=[{"name": "ct", "match": {"Modality": "CT"}, "pipelines": ["nodule-det"]}],
    )
    send_datasets(datasets, "127.0.0.1", node.dicom_port, "AINODE", "CTSCU")
    job = _job(node)
    assert job.state is JobState.SUCCEEDED, job.error
    outputs = _outputs(node, job.id)
    assert "SR" in outputs
    peers.assert_dciodvfy_clean(outputs["SR"])
    report = hd.sr.srread(outputs["SR"])
    scoords = [item for item in _items(report) if item.ValueType == "SCOORD3D"]
    assert scoords, "a detection must carry a 3-D spatial coordinate a viewer can draw"
    points = np.array(scoords[0].GraphicData, dtype=float).reshape(-1, 3)
    # the cube spans x 30..38, y 20..28, z 10..18 mm (1 mm voxels, origin at the first voxel)
    origin = np.array(datasets[0].ImagePositionPatient, dtype=float)
    centre = points.mean(axis=0) - origin
    np.testing.assert_allclose(centre, (34, 24, 14), atol=3.0)
