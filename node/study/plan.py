"""One plan per job: which result objects it writes, as what, and where each goes.

The planner decides once, when a job is queued (a complete pushed study, an
inference request, a re-run): from the job's destinations, their ``formats``
and viewer ``profile``, it plans every result object with its identity
(Series and SOP Instance UIDs, Series Number and Description) and the
destinations it goes to. The plan is a frozen value stored with the job; the
worker writes exactly the plan and egress sends each destination exactly its
entries. No other stage keeps a list of kinds or formats.

Rules (see ``docs/architecture.md``):

- Destinations that would receive identical objects share one *variant*
  (their effective profile's key, :attr:`node.config.Destination.variant`);
  each variant gets its own SEG, SR, SC and KOS (:attr:`ResultKind.profiled`).
  The default variant carries the UIDs minted for the job; the others UIDs
  derived from them and the variant's key, the same on every re-run.
- An SR or KOS references the SEG of its variant: that SEG is planned for
  its identity even when no destination of the variant takes SEGs
  (``write=False``: not written, not sent).
- PDF, derived series and registrations are the same for every destination:
  planned once, for the destinations whose ``formats`` ask for them.
- A job that replaces earlier ones (``late_series: rerun``) plans one
  rejection note per destination; the worker writes it when that destination
  accepted something it must withdraw.
- A job without destinations (results kept for DICOMweb only) plans SEG, SR,
  derived series and registrations for no one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dicom_sr.identity import derived_uid
from dicom_sr.kinds import ResultKind
from node.config import Destination, ResultProfile
from node.db.models import REJECTION_FOR
from node.errors import JobError

#: The variant whose objects carry the UIDs minted for the job.
DEFAULT_VARIANT = "default"
#: Version of the stored plan's JSON form.
PLAN_VERSION = 1

#: The order objects are written and listed in.
KIND_ORDER = tuple(ResultKind)
#: What a job without destinations writes (kept for DICOMweb).
UNADDRESSED_KINDS = (ResultKind.SEG, ResultKind.SR, ResultKind.DERIVED, ResultKind.REG)
#: Series Description suffix of each kind (after "AI <pipeline>").
_DESCRIPTIONS = {
    ResultKind.SEG: "SEG",
    ResultKind.SR: "report",
    ResultKind.SC: "overlay (not for diagnosis)",
    ResultKind.PDF: "PDF report",
    ResultKind.KO: "key images",
    ResultKind.DERIVED: "",
    ResultKind.REG: "registration",
    ResultKind.REJECT: "withdrawn results",
}
#: Series Number of each kind, from ``seg_series_number`` (the SR has its own setting).
_SERIES_OFFSET = {
    ResultKind.SEG: 0,
    ResultKind.SC: 2,
    ResultKind.PDF: 3,
    ResultKind.KO: 4,
    ResultKind.REG: 5,
    ResultKind.REJECT: 6,
    ResultKind.DERIVED: 10,
}


@dataclass(frozen=True, kw_only=True)
class PlannedObject:
    """One result object of the plan (for SC and derived series: the first of its series).

    Parameters
    ----------
    kind : ResultKind
        What it is.
    variant : str | None
        The viewer-profile key of a profiled kind; ``None`` for objects every
        destination gets alike; for a rejection note ``"to:<destination>"``.
        Recorded with the output, so egress can tell the objects apart.
    series_instance_uid, sop_instance_uid : str
        Its identity (the writers derive the UIDs of further images from them).
    series_number : int
        Series Number.
    series_description : str
        Series Description (LO).
    destinations : tuple[str, ...]
        Where it goes.
    write : bool
        ``False`` for a SEG planned only so that its variant's SR or KOS can
        reference it.
    """

    kind: ResultKind
    variant: str | None
    series_instance_uid: str
    sop_instance_uid: str
    series_number: int
    series_description: str
    destinations: tuple[str, ...] = ()
    write: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.kind, ResultKind):
            raise JobError(f"planned object kind must be a ResultKind: {self.kind!r}")
        if self.kind is ResultKind.REJECT:
            if not (self.variant or "").startswith(REJECTION_FOR):
                raise JobError("a rejection note's variant names its destination")
        elif self.kind.profiled and self.variant is None:
            raise JobError(f"{self.kind} objects are planned for a variant")
        elif not self.kind.profiled and self.variant is not None:
            raise JobError(f"{self.kind} objects are the same for every variant")
        if not self.write and self.destinations:
            raise JobError("an object planned for reference only goes nowhere")

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "variant": self.variant,
            "series_instance_uid": self.series_instance_uid,
            "sop_instance_uid": self.sop_instance_uid,
            "series_number": self.series_number,
            "series_description": self.series_description,
            "destinations": list(self.destinations),
            "write": self.write,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlannedObject:
        return cls(
            kind=ResultKind(data["kind"]),
            variant=data.get("variant"),
            series_instance_uid=str(data["series_instance_uid"]),
            sop_instance_uid=str(data["sop_instance_uid"]),
            series_number=int(data["series_number"]),
            series_description=str(data["series_description"]),
            destinations=tuple(data.get("destinations", ())),
            write=bool(data.get("write", True)),
        )


@dataclass(frozen=True, kw_only=True)
class PlannedVariant:
    """The destinations sharing one viewer profile, and that profile."""

    key: str
    profile: ResultProfile
    destinations: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ResultPlan:
    """Everything a job will write and where each object goes (decided once, then only read).

    Parameters
    ----------
    pipeline_name : str
        The pipeline whose findings are written.
    variants : tuple[PlannedVariant, ...]
        The viewer-profile variants, the default first.
    objects : tuple[PlannedObject, ...]
        Every planned object, in writing order.
    """

    pipeline_name: str
    variants: tuple[PlannedVariant, ...]
    objects: tuple[PlannedObject, ...] = field(default=())

    def __post_init__(self) -> None:
        keys = [v.key for v in self.variants]
        if len(set(keys)) != len(keys):
            raise JobError(f"a plan has each variant once: {keys}")
        seen: set[str] = set()
        for obj in self.objects:
            if obj.kind.profiled and obj.variant not in keys:
                raise JobError(f"{obj.kind} planned for unknown variant {obj.variant!r}")
            if obj.sop_instance_uid in seen:
                raise JobError(f"two planned objects share SOP Instance UID {obj.sop_instance_uid}")
            seen.add(obj.sop_instance_uid)

    # -- readings ----------------------------------------------------------------

    @property
    def destinations(self) -> tuple[str, ...]:
        """Every destination the plan sends something to."""
        return tuple(dict.fromkeys(d for o in self.objects for d in o.destinations))

    @property
    def kinds(self) -> tuple[ResultKind, ...]:
        """The kinds the job writes, in writing order."""
        written = {o.kind for o in self.objects if o.write}
        return tuple(k for k in KIND_ORDER if k in written)

    def profiled(self, variant: str) -> tuple[PlannedObject, ...]:
        """The SEG, SR, SC and KOS objects of one variant (references included)."""
        return tuple(o for o in self.objects if o.kind.profiled and o.variant == variant)

    def shared(self) -> tuple[PlannedObject, ...]:
        """The PDF, derived series and registrations (written once, for everyone)."""
        return tuple(
            o for o in self.objects if not o.kind.profiled and o.kind is not ResultKind.REJECT
        )

    def rejection_notes(self) -> tuple[PlannedObject, ...]:
        """One rejection note per destination, when the job replaces earlier ones."""
        return tuple(o for o in self.objects if o.kind is ResultKind.REJECT)

    def variant_of(self, destination: str) -> str | None:
        """The variant key planned for ``destination``, if it is one of the plan's."""
        return next((v.key for v in self.variants if destination in v.destinations), None)

    def sends(self, destination: str) -> frozenset[tuple[str, str | None]]:
        """``(kind, variant)`` of every output the destination gets (how egress selects)."""
        return frozenset(
            (o.kind.value, o.variant) for o in self.objects if destination in o.destinations
        )

    def sends_like(self, destination: Destination) -> frozenset[tuple[str, str | None]]:
        """What a destination not in the plan would get (a re-send to another destination).

        The objects of its profile's variant and the shared ones, of its formats.
        """
        wanted = set(destination.formats)
        return frozenset(
            (o.kind.value, o.variant)
            for o in self.objects
            if o.write
            and o.kind in wanted
            and (o.variant is None or o.variant == destination.variant)
        )

    def written_variants(self) -> dict[str, list[str]]:
        """Per variant, the profiled kinds it writes (for the job summary)."""
        return {
            v.key: [o.kind.format_name for o in self.profiled(v.key) if o.write]
            for v in self.variants
        }

    # -- storage -------------------------------------------------------------------

    def as_json(self) -> dict[str, Any]:
        """The JSON form stored with the job."""
        return {
            "version": PLAN_VERSION,
            "pipeline_name": self.pipeline_name,
            "variants": [
                {
                    "key": v.key,
                    "profile": v.profile.model_dump(mode="json"),
                    "destinations": list(v.destinations),
                }
                for v in self.variants
            ],
            "objects": [o.as_json() for o in self.objects],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResultPlan:
        """Read a stored plan back (refuses a version this node does not know)."""
        if data.get("version") != PLAN_VERSION:
            raise JobError(
                f"stored result plan has version {data.get('version')!r}; re-run the job"
            )
        return cls(
            pipeline_name=str(data["pipeline_name"]),
            variants=tuple(
                PlannedVariant(
                    key=str(v["key"]),
                    profile=ResultProfile.model_validate(v["profile"]),
                    destinations=tuple(v["destinations"]),
                )
                for v in data["variants"]
            ),
            objects=tuple(PlannedObject.from_json(o) for o in data["objects"]),
        )


class ResultPlanner:
    """Makes :class:`ResultPlan` values from the configured destinations.

    Parameters
    ----------
    destinations : mapping of str to Destination
        The configured destinations by name.
    seg_series_number, sr_series_number : int
        Series Numbers of the SEG (the other kinds count on from it) and the SR.
    """

    def __init__(
        self,
        destinations: Mapping[str, Destination],
        seg_series_number: int = 9001,
        sr_series_number: int = 9002,
    ) -> None:
        self._destinations = dict(destinations)
        self._seg_number = seg_series_number
        self._sr_number = sr_series_number

    def plan(
        self,
        pipeline_name: str,
        destinations: Sequence[str],
        seed: Mapping[str, Mapping[str, str]],
        *,
        replaces_earlier: bool = False,
    ) -> ResultPlan:
        """Plan one job's results.

        Parameters
        ----------
        pipeline_name : str
            The job's pipeline (named in the Series Descriptions).
        destinations : sequence of str
            The job's destinations; names no longer configured are left out
            (egress fails their deliveries with a clear reason).
        seed : mapping
            The UIDs minted for the job (:func:`mint_result_uids`), by kind.
        replaces_earlier : bool
            ``late_series: rerun``: plan a rejection note per destination.
        """
        known = [
            (n, self._destinations[n])
            for n in dict.fromkeys(destinations)
            if n in self._destinations
        ]
        variants = _variants(known)
        objects: list[PlannedObject] = []
        for variant in variants:
            members = [(n, d) for n, d in known if n in variant.destinations]
            objects.extend(self._profiled(pipeline_name, variant, members, seed))
        objects.extend(self._shared(pipeline_name, known, seed))
        if replaces_earlier:
            objects.extend(self._rejections(pipeline_name, [n for n, _ in known], seed))
        objects.sort(key=lambda o: KIND_ORDER.index(o.kind))
        return ResultPlan(pipeline_name=pipeline_name, variants=variants, objects=tuple(objects))

    def _profiled(
        self,
        pipeline: str,
        variant: PlannedVariant,
        members: Sequence[tuple[str, Destination]],
        seed: Mapping[str, Mapping[str, str]],
    ) -> list[PlannedObject]:
        wanted = {k: _takers(members, k) for k in KIND_ORDER if k.profiled}
        if not members:  # no destinations at all: kept for DICOMweb
            wanted = {k: () for k in UNADDRESSED_KINDS if k.profiled}
        wanted = {k: names for k, names in wanted.items() if names or not members}
        objects = [
            self._object(pipeline, k, variant.key, seed, names) for k, names in wanted.items()
        ]
        references = {ResultKind.SR, ResultKind.KO} & set(wanted)
        if references and ResultKind.SEG not in wanted:
            objects.append(
                self._object(pipeline, ResultKind.SEG, variant.key, seed, (), write=False)
            )
        return objects

    def _shared(
        self,
        pipeline: str,
        known: Sequence[tuple[str, Destination]],
        seed: Mapping[str, Mapping[str, str]],
    ) -> list[PlannedObject]:
        objects = []
        for kind in KIND_ORDER:
            if kind.profiled or not kind.requestable:
                continue
            names = _takers(known, kind)
            if names or (not known and kind in UNADDRESSED_KINDS):
                objects.append(self._object(pipeline, kind, None, seed, names))
        return objects

    def _rejections(
        self, pipeline: str, names: Sequence[str], seed: Mapping[str, Mapping[str, str]]
    ) -> list[PlannedObject]:
        notes = []
        for name in names:
            base = self._object(pipeline, ResultKind.REJECT, REJECTION_FOR + name, seed, (name,))
            sop_uid = derived_uid("reject", base.sop_instance_uid, name)
            notes.append(replace(base, sop_instance_uid=sop_uid))
        return notes

    def _object(
        self,
        pipeline: str,
        kind: ResultKind,
        variant: str | None,
        seed: Mapping[str, Mapping[str, str]],
        destinations: Iterable[str],
        *,
        write: bool = True,
    ) -> PlannedObject:
        uids = seed.get(kind.value)
        if uids is None:
            raise JobError(f"no result UIDs were minted for {kind}; re-run the job")
        series_uid, sop_uid = uids["series_instance_uid"], uids["sop_instance_uid"]
        if kind.profiled and variant != DEFAULT_VARIANT:
            series_uid = derived_uid("variant-series", series_uid, str(variant))
            sop_uid = derived_uid("variant-instance", sop_uid, str(variant))
        number = (
            self._sr_number if kind is ResultKind.SR else self._seg_number + _SERIES_OFFSET[kind]
        )
        return PlannedObject(
            kind=kind,
            variant=variant,
            series_instance_uid=series_uid,
            sop_instance_uid=sop_uid,
            series_number=number,
            series_description=f"AI {pipeline} {_DESCRIPTIONS[kind]}".strip()[:64],
            destinations=tuple(destinations),
            write=write,
        )


def _takers(members: Sequence[tuple[str, Destination]], kind: ResultKind) -> tuple[str, ...]:
    return tuple(name for name, destination in members if kind in destination.formats)


def _variants(known: Sequence[tuple[str, Destination]]) -> tuple[PlannedVariant, ...]:
    """One variant per distinct effective profile among the destinations, the default first."""
    grouped: dict[str, tuple[ResultProfile, list[str]]] = {}
    for name, destination in known:
        profile = destination.profile.effective(destination.formats)
        grouped.setdefault(destination.variant, (profile, []))[1].append(name)
    if not grouped:
        grouped[DEFAULT_VARIANT] = (ResultProfile(), [])
    ordered = sorted(grouped.items(), key=lambda item: (item[0] != DEFAULT_VARIANT, item[0]))
    return tuple(
        PlannedVariant(key=key, profile=profile, destinations=tuple(names))
        for key, (profile, names) in ordered
    )
