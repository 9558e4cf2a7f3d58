"""The pipeline registry (entry points), the Pipeline contract and import boundaries."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint

import numpy as np
import pytest

from pipelines import registry
from pipelines.base import InputSpec, Pipeline
from pipelines.ct_anatomy import CtAnatomyPipeline
from pipelines.errors import InputError, PipelineError
from pipelines.findings import Findings
from pipelines.volume import Volume


class _Dummy(Pipeline):
    name = "dummy"
    version = "0.1"
    accepts = InputSpec(modalities=frozenset({"CT", "MR"}), min_frames=3)

    def run(self, volume: Volume) -> Findings:
        return Findings(self.name, self.version, volume.sop_instance_uids)


class NotAPipeline:
    name = "not-a-pipeline"


def _volume(
    n_frames: int = 4, modality: str = "CT", sop_class_uid: str | None = "1.2.840.10008.5.1.4.1.1.2"
) -> Volume:
    return Volume(
        voxels=np.zeros((n_frames, 2, 2), dtype=np.float32),
        spacing=(1.0, 1.0, 1.0),
        origin=(0.0, 0.0, 0.0),
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.0, 1.0, 0.0),
        slice_direction=(0.0, 0.0, 1.0),
        sop_instance_uids=tuple(str(k) for k in range(n_frames)),
        source_frame_numbers=(1,) * n_frames,
        source_indices=tuple(range(n_frames)),
        modality=modality,
        series_instance_uid="1.2.3",
        sop_class_uid=sop_class_uid,
    )


def _fake_entry_points(monkeypatch: pytest.MonkeyPatch, *pairs: tuple[str, str]) -> None:
    points = [EntryPoint(name, value, registry.ENTRY_POINT_GROUP) for name, value in pairs]

    def fake(group: str) -> list[EntryPoint]:
        return points if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(registry, "entry_points", fake)


# Registry -------------------------------------------------------------------


def test_installed_entry_point_finds_ct_anatomy() -> None:
    found = registry.available()
    assert found["ct-anatomy"] is CtAnatomyPipeline
    assert "ct-anatomy" in registry.names()
    assert registry.get("ct-anatomy") is CtAnatomyPipeline


def test_unknown_pipeline_names_the_installed_ones() -> None:
    with pytest.raises(PipelineError, match=r"unknown pipeline 'no-such'.*ct-anatomy"):
        registry.get("no-such")


def test_third_party_pipeline_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_entry_points(monkeypatch, ("dummy", f"{__name__}:_Dummy"))
    assert registry.available() == {"dummy": _Dummy}
    assert registry.get("dummy") is _Dummy


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("broken", "no_such_module_xyz:Thing", "cannot be imported"),
        ("missing", f"{__name__}:NoSuchClass", "cannot be imported"),
        ("not-a-pipeline", f"{__name__}:NotAPipeline", "not a Pipeline subclass"),
        ("other-name", f"{__name__}:_Dummy", "whose name is 'dummy'"),
    ],
)
def test_bad_entry_points_raise_pipeline_errors(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    _fake_entry_points(monkeypatch, (name, value))
    with pytest.raises(PipelineError, match=message):
        registry.get(name)
    with pytest.raises(PipelineError, match=message):
        registry.available()


def test_no_pipelines_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_entry_points(monkeypatch)
    assert registry.available() == {}
    with pytest.raises(PipelineError, match="installed pipelines: none"):
        registry.get("ct-anatomy")


# Pipeline contract ----------------------------------------------------------


def test_input_spec_describes_itself() -> None:
    assert CtAnatomyPipeline.accepts.describe() == "CT, 3-D, >= 1 frame, 3 SOP class(es)"
    assert _Dummy.accepts.describe() == "CT, MR, 3-D, >= 3 frames"
    assert InputSpec(frozenset({"CR", "DX"}), dimensions=2).describe() == "CR, DX, 2-D"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"modalities": frozenset()},
        {"modalities": frozenset({"CT"}), "min_frames": 0},
        {"modalities": frozenset({"CT"}), "dimensions": 4},
        {"modalities": frozenset({"CT"}), "dimensions": 2, "min_frames": 2},
    ],
)
def test_input_spec_validates(kwargs: dict[str, object]) -> None:
    with pytest.raises(PipelineError):
        InputSpec(**kwargs)  # type: ignore[arg-type]


def test_check_input_accepts_and_refuses() -> None:
    pipeline = _Dummy()
    pipeline.check_input(_volume(4, "MR"))
    with pytest.raises(InputError, match="modality PT"):
        pipeline.check_input(_volume(4, "PT"))
    with pytest.raises(InputError, match="at least 3 needed"):
        pipeline.check_input(_volume(2))


def test_check_input_by_sop_class_and_dimensions() -> None:
    ct = CtAnatomyPipeline()
    ct.check_input(_volume(1))
    with pytest.raises(InputError, match="SOP class"):
        ct.check_input(_volume(4, sop_class_uid="1.2.840.10008.5.1.4.1.1.7"))
    with pytest.raises(InputError, match="SOP class missing"):
        ct.check_input(_volume(4, sop_class_uid=None))
    spec = InputSpec(frozenset({"CT"}), dimensions=2)
    assert spec.mismatch(_volume(1)) is None
    assert spec.mismatch(_volume(2)) == "a 2-D pipeline needs exactly one frame, got 2"


def test_life_cycle() -> None:
    pipeline = _Dummy()
    pipeline.initialize()
    findings = pipeline.run(_volume(3))
    pipeline.finalize()
    assert findings.pipeline_name == "dummy"
    with pytest.raises(TypeError):
        Pipeline()  # type: ignore[abstract]


def test_pipelines_package_respects_the_import_boundaries() -> None:
    """pipelines/ never imports writers, networking, SQL or the other packages."""
    code = (
        "import sys\n"
        "import pipelines.base, pipelines.codes, pipelines.ct_anatomy\n"
        "import pipelines.registry, pipelines.volume\n"
        "pipelines.registry.available()\n"
        "banned = ('highdicom', 'pynetdicom', 'sqlalchemy', 'node', 'dicom_sr', 'torch', 'monai')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in banned))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
