"""Routing rules on series attributes."""

from __future__ import annotations

from node.config import Route, RouteMatch
from node.study.router import SeriesAttributes, route

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def _series(**kw: object) -> SeriesAttributes:
    base: dict[str, object] = {
        "series_instance_uid": "1.2.3",
        "modality": "CT",
        "body_part_examined": "CHEST",
        "sop_class_uids": frozenset({CT_IMAGE}),
        "series_description": "Thorax 1.0 B31f",
        "study_description": "CT THORAX",
        "calling_ae_titles": frozenset({"ORTHANC"}),
    }
    base.update(kw)
    return SeriesAttributes(**base)  # type: ignore[arg-type]


def _route(name: str, pipelines: tuple[str, ...] = ("p",), **match: object) -> Route:
    return Route(name=name, match=RouteMatch(**match), pipelines=pipelines, send_to=())


def test_each_attribute_matches_and_mismatches() -> None:
    cases = [
        ({"Modality": "ct"}, {"modality": "MR"}),
        ({"BodyPartExamined": ["CHEST", "LUNG"]}, {"body_part_examined": "HEAD"}),
        ({"SOPClassUID": CT_IMAGE}, {"sop_class_uids": frozenset({"1.2.840.10008.5.1.4.1.1.4"})}),
        ({"SeriesDescription": r"thorax.*b31"}, {"series_description": "Scout"}),
        ({"StudyDescription": "^CT THORAX$"}, {"study_description": None}),
        ({"CallingAETitle": "orthanc"}, {"calling_ae_titles": frozenset({"OTHER"})}),
    ]
    for match, other in cases:
        rule = _route("r", **match)
        assert [d.route_name for d in route(_series(), [rule])] == ["r"], match
        assert route(_series(**other), [rule]) == [], (match, other)


def test_one_series_several_pipelines_and_routes() -> None:
    rules = [
        _route("ct", ("ct-anatomy", "reformat"), Modality="CT"),
        _route("chest", ("lung-ai",), BodyPartExamined="CHEST"),
        _route("mr", ("brain",), Modality="MR"),
    ]
    decisions = route(_series(), rules)
    assert [(d.route_name, d.pipeline_name) for d in decisions] == [
        ("ct", "ct-anatomy"),
        ("ct", "reformat"),
        ("chest", "lung-ai"),
    ]


def test_missing_attribute_never_matches_a_condition() -> None:
    assert route(_series(body_part_examined=None), [_route("r", BodyPartExamined="CHEST")]) == []
    assert route(_series(modality=None), [_route("r")]) != []  # empty match: everything
