"""Settings: YAML, environment overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import load_settings
from node.errors import ConfigError

EXAMPLE = """
node:
  ae_title: AINODE
  dicom_port: 11112
  http_port: 8080
  storage_dir: ./ainode-data
  database_url: sqlite:///./ainode-data/ainode.db
  study_stable_seconds: 20
destinations:
  pacs: {dimse: {ae_title: ORTHANC, host: 127.0.0.1, port: 4242}}
routes:
  - name: ct
    match: {Modality: CT}
    pipelines: [ct-anatomy]
    send_to: [pacs]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ainode.yaml"
    path.write_text(text)
    return path


def test_issue_example_loads(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, EXAMPLE))
    assert settings.node.dicom_port == 11112
    assert settings.node.study_stable_seconds == 20
    assert settings.destinations["pacs"].dimse.port == 4242
    assert settings.destinations["pacs"].formats == ("seg", "sr")
    assert settings.routes[0].match.Modality == ("CT",)
    assert settings.routes[0].pipelines == ("ct-anatomy",)


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AINODE_NODE__DICOM_PORT", "11999")
    settings = load_settings(_write(tmp_path, EXAMPLE))
    assert settings.node.dicom_port == 11999
    assert settings.node.ae_title == "AINODE"


def test_overrides_beat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AINODE_NODE__DICOM_PORT", "11999")
    assert load_settings(overrides={"node": {"dicom_port": 12000}}).node.dicom_port == 12000


def test_defaults_without_file() -> None:
    settings = load_settings()
    assert settings.node.ae_title == "AINODE"
    assert settings.node.resolved_database_url.startswith("sqlite:///")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (EXAMPLE.replace("http_port: 8080", "http_port: 8080\n  colour: blue"), "node.colour: unknown key"),
        (EXAMPLE.replace("dicom_port: 11112", "dicom_port: 99999"), "node.dicom_port"),
        (EXAMPLE.replace("ae_title: AINODE", "ae_title: MUCH-TOO-LONG-AE-TITLE"), "node.ae_title"),
        (EXAMPLE.replace("send_to: [pacs]", "send_to: [archive]"), "unknown destination 'archive'"),
        (EXAMPLE.replace("match: {Modality: CT}", "match: {Modality: CT, SeriesDescription: '('}"),
         "routes.0.match.SeriesDescription"),
        (EXAMPLE.replace("match: {Modality: CT}", "match: {Modalty: CT}"), "routes.0.match.Modalty"),
    ],
)
def test_wrong_key_or_value_is_named(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text))
    assert key in str(info.value)


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(_write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(_write(tmp_path, "node: [unclosed\n"))


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(Exception):
        settings.node.dicom_port = 1  # type: ignore[misc]
