"""What a MONAI bundle is, read from its files without running any of its code.

A MONAI bundle (https://docs.monai.io/en/stable/mb_specification.html) is a
directory::

    configs/metadata.json          name, version, network_data_format, ...
    configs/inference.json|yaml    network_def, preprocessing, inferer, ...
    models/model.pt                the weights (a state dict)

:func:`read_bundle_spec` reads ``metadata.json`` and the label map only
(plain JSON / YAML, no ``$`` expressions evaluated), so it is safe to call at
node start-up for every configured bundle. It decides the task, the labels of
the output channels and their codes, and refuses a bundle whose labels are
not all mapped to codes: an unmapped label is an error at start-up, never a
silently wrong code in a SEG.

Task (first that applies): ``metadata["task"]`` when it is one of
``segmentation``, ``classification``, ``detection``; an output of ``type``
``"box"`` means detection; an output of ``type`` ``"probabilities"`` (or
``format`` ``"classes"``) classification; an output of ``format``
``"segmentation"`` segmentation.

Labels: the ``channel_def`` (``{"0": "background", "1": "spleen"}``) of the
prediction output; for detection the ``channel_def`` of the ``label`` output
(or any output of ``type`` ``"index"``), else ``metadata["labels"]``.

Codes, per label name (the first source that has the label wins): the
administrator's label map file (YAML or JSON), then ``metadata["label_codes"]``.
Each entry::

    spleen:
      category: {value: "91723000", scheme: SCT, meaning: Anatomical Structure}
      type: ["78961009", SCT, Spleen]          # a list [value, scheme, meaning] also works
      region: ["818981001", SCT, Abdomen]      # optional (Anatomic Region)

For classification, ``category`` is the concept evaluated and ``type`` the
value found (e.g. category SCT 404684003 "Clinical finding", type SCT
36118008 "Pneumothorax"). A segmentation label named ``background``
(case-insensitive) needs no code.
"""

from __future__ import annotations

import enum
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.errors import PipelineError
from pipelines.findings import Code, FindingsError

logger = logging.getLogger(__name__)

#: Modality words used in bundle metadata, mapped to DICOM Modality values.
_MODALITY_WORDS = {
    "CT": {"CT"},
    "MR": {"MR"},
    "MRI": {"MR"},
    "PT": {"PT"},
    "PET": {"PT"},
    "CR": {"CR"},
    "DX": {"DX"},
    "XR": {"CR", "DX"},
    "X-RAY": {"CR", "DX"},
    "XRAY": {"CR", "DX"},
    "US": {"US"},
    "ULTRASOUND": {"US"},
    "MG": {"MG"},
}
_DEFAULT_MODALITIES = {2: frozenset({"CR", "DX", "US"}), 3: frozenset({"CT", "MR"})}


class Task(enum.Enum):
    """What a bundle's network does."""

    SEGMENTATION = "segmentation"
    CLASSIFICATION = "classification"
    DETECTION = "detection"


@dataclass(frozen=True)
class LabelCodes:
    """The codes of one output label (SEG segment properties or SR evaluation)."""

    category: Code
    property_type: Code
    region: Code | None = None


@dataclass(frozen=True)
class BundleSpec:
    """A bundle as described by its metadata and label map.

    Parameters
    ----------
    name, version : str
        ``metadata["name"]`` (or the directory name) and ``metadata["version"]``.
    task : Task
        Segmentation, classification or detection.
    labels : tuple[str, ...]
        Output label names by channel (segmentation, classification) or
        class index (detection).
    codes : Mapping[str, LabelCodes]
        Codes of every label except a segmentation background.
    modalities : frozenset[str]
        DICOM Modality values accepted.
    spatial_dims : int
        2 or 3.
    in_channels : int
        Input channels the network expects (a grayscale image is repeated).
    spatial_shape : tuple[int, ...] | None
        ``inputs.image.spatial_shape`` when numeric (patch or network input size).
    pixdim, axcodes, intensity : optional
        ainode extensions in ``inputs.image`` that override what is read from
        the inference configuration: target spacing (mm, in network axis
        order), orientation codes (e.g. ``"RAS"``) and an intensity window
        ``{"a_min", "a_max", "b_min", "b_max", "clip"}``.
    """

    name: str
    version: str
    task: Task
    labels: tuple[str, ...]
    codes: Mapping[str, LabelCodes]
    modalities: frozenset[str]
    spatial_dims: int
    in_channels: int
    spatial_shape: tuple[int, ...] | None
    pixdim: tuple[float, ...] | None = None
    axcodes: str | None = None
    intensity: Mapping[str, Any] | None = None

    def is_background(self, index: int) -> bool:
        """Whether segmentation channel ``index`` is the background."""
        return self.task is Task.SEGMENTATION and self.labels[index].lower() == "background"


def read_bundle_spec(
    bundle: Path, label_map: Path | None = None, modalities: frozenset[str] | None = None
) -> BundleSpec:
    """Read ``configs/metadata.json`` and the label map of a bundle directory.

    Raises
    ------
    PipelineError
        When the metadata is missing or malformed, the task or labels cannot
        be told, or a label has no codes.
    """
    metadata = _read_json(bundle / "configs" / "metadata.json")
    fmt = metadata.get("network_data_format")
    if not isinstance(fmt, dict):
        raise PipelineError(f"bundle {bundle.name}: metadata.json has no network_data_format")
    image = _input_image(fmt, bundle)
    outputs = fmt.get("outputs")
    if not isinstance(outputs, dict) or not outputs:
        raise PipelineError(f"bundle {bundle.name}: network_data_format has no outputs")
    task = _task(metadata, outputs, bundle)
    labels = _labels(task, metadata, outputs, bundle)
    codes = _codes(labels, task, metadata, label_map, bundle)
    shape = _spatial_shape(image.get("spatial_shape"))
    spatial_dims = int(metadata.get("spatial_dims") or image.get("spatial_dims") or 0) or (
        len(shape) if shape else 3
    )
    if spatial_dims not in (2, 3):
        raise PipelineError(
            f"bundle {bundle.name}: spatial_dims must be 2 or 3, got {spatial_dims}"
        )
    return BundleSpec(
        name=str(metadata.get("name") or bundle.name),
        version=str(metadata.get("version") or "0"),
        task=task,
        labels=labels,
        codes=codes,
        modalities=modalities or _modalities(image.get("modality"), spatial_dims),
        spatial_dims=spatial_dims,
        in_channels=int(image.get("num_channels", 1) or 1),
        spatial_shape=shape,
        pixdim=tuple(float(v) for v in image["pixdim"]) if "pixdim" in image else None,
        axcodes=str(image["axcodes"]) if "axcodes" in image else None,
        intensity=image.get("intensity"),
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise PipelineError(f"bundle file {path} is missing") from exc
    except (OSError, ValueError) as exc:
        raise PipelineError(f"bundle file {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise PipelineError(f"bundle file {path} is not a JSON object")
    return data


def _input_image(fmt: Mapping[str, Any], bundle: Path) -> Mapping[str, Any]:
    inputs = fmt.get("inputs")
    if not isinstance(inputs, dict) or not inputs:
        raise PipelineError(f"bundle {bundle.name}: network_data_format has no inputs")
    image = inputs.get("image", next(iter(inputs.values())))
    if not isinstance(image, dict):
        raise PipelineError(f"bundle {bundle.name}: input description is not an object")
    return image


def _task(metadata: Mapping[str, Any], outputs: Mapping[str, Any], bundle: Path) -> Task:
    declared = metadata.get("task")
    if isinstance(declared, str) and declared.lower() in {t.value for t in Task}:
        return Task(declared.lower())
    described = [o for o in outputs.values() if isinstance(o, dict)]
    if any(o.get("type") == "box" for o in described):
        return Task.DETECTION
    if any(o.get("type") == "probabilities" or o.get("format") == "classes" for o in described):
        return Task.CLASSIFICATION
    if any(o.get("format") == "segmentation" for o in described):
        return Task.SEGMENTATION
    raise PipelineError(
        f"bundle {bundle.name}: cannot tell segmentation, classification or detection "
        "from network_data_format.outputs (set metadata 'task')"
    )


def _labels(
    task: Task, metadata: Mapping[str, Any], outputs: Mapping[str, Any], bundle: Path
) -> tuple[str, ...]:
    if task is Task.DETECTION:
        candidates = [outputs.get("label")] + [
            o for o in outputs.values() if isinstance(o, dict) and o.get("type") == "index"
        ]
    else:
        candidates = [outputs.get("pred")] + list(outputs.values())
    for output in candidates:
        if isinstance(output, dict) and isinstance(output.get("channel_def"), dict):
            return _ordered(output["channel_def"], bundle)
    listed = metadata.get("labels")
    if isinstance(listed, list) and listed:
        return tuple(str(v) for v in listed)
    if isinstance(listed, dict) and listed:
        return _ordered(listed, bundle)
    raise PipelineError(f"bundle {bundle.name}: no output channel_def names the labels")


def _ordered(channel_def: Mapping[str, Any], bundle: Path) -> tuple[str, ...]:
    try:
        items = sorted((int(k), str(v)) for k, v in channel_def.items())
    except ValueError as exc:
        raise PipelineError(f"bundle {bundle.name}: channel_def keys must be integers") from exc
    if [k for k, _ in items] != list(range(len(items))):
        raise PipelineError(f"bundle {bundle.name}: channel_def must number channels 0..N-1")
    return tuple(v for _, v in items)


def _codes(
    labels: tuple[str, ...],
    task: Task,
    metadata: Mapping[str, Any],
    label_map: Path | None,
    bundle: Path,
) -> Mapping[str, LabelCodes]:
    sources: list[Mapping[str, Any]] = []
    if label_map is not None:
        sources.append(_read_label_map(label_map))
    if isinstance(metadata.get("label_codes"), dict):
        sources.append(metadata["label_codes"])
    codes: dict[str, LabelCodes] = {}
    unmapped = []
    for label in labels:
        if task is Task.SEGMENTATION and label.lower() == "background":
            continue
        entry = next((s[label] for s in sources if label in s), None)
        if entry is None:
            unmapped.append(label)
            continue
        codes[label] = _label_codes(entry, label, bundle)
    if unmapped:
        raise PipelineError(
            f"bundle {bundle.name}: label(s) {', '.join(unmapped)} have no codes; add them to "
            "the label map file (label: {category, type}) or to metadata.json label_codes"
        )
    return codes


def _read_label_map(path: Path) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())  # JSON is YAML too
    except FileNotFoundError as exc:
        raise PipelineError(f"label map {path} is missing") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise PipelineError(f"label map {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise PipelineError(f"label map {path} must map label names to codes")
    return data


def _label_codes(entry: object, label: str, bundle: Path) -> LabelCodes:
    if not isinstance(entry, dict) or "category" not in entry or "type" not in entry:
        raise PipelineError(
            f"bundle {bundle.name}: codes of label {label!r} need category and type"
        )
    region = entry.get("region")
    return LabelCodes(
        category=_code(entry["category"], label, bundle),
        property_type=_code(entry["type"], label, bundle),
        region=_code(region, label, bundle) if region is not None else None,
    )


def _code(value: object, label: str, bundle: Path) -> Code:
    try:
        if isinstance(value, dict):
            return Code(str(value["value"]), str(value["scheme"]), str(value["meaning"]))
        if isinstance(value, (list, tuple)) and len(value) == 3:
            return Code(str(value[0]), str(value[1]), str(value[2]))
    except (KeyError, FindingsError) as exc:
        raise PipelineError(f"bundle {bundle.name}: bad code for label {label!r}: {exc}") from exc
    raise PipelineError(
        f"bundle {bundle.name}: a code of label {label!r} must be {{value, scheme, meaning}} "
        "or [value, scheme, meaning]"
    )


def _spatial_shape(value: object) -> tuple[int, ...] | None:
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return tuple(value)
    return None


def _modalities(value: object, spatial_dims: int) -> frozenset[str]:
    words = re.split(r"[/,;| ]+", value) if isinstance(value, str) else []
    if isinstance(value, list):
        words = [str(v) for v in value]
    found: set[str] = set()
    for word in words:
        found |= _MODALITY_WORDS.get(word.strip().upper(), set())
    return frozenset(found) or _DEFAULT_MODALITIES[spatial_dims]
