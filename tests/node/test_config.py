"""Settings: YAML, environment overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dicom_sr.kinds import ResultKind
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
    assert settings.destinations["pacs"].formats == (ResultKind.SEG, ResultKind.SR)
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
        (
            EXAMPLE.replace("http_port: 8080", "http_port: 8080\n  colour: blue"),
            "node.colour: unknown key",
        ),
        (EXAMPLE.replace("dicom_port: 11112", "dicom_port: 99999"), "node.dicom_port"),
        (EXAMPLE.replace("ae_title: AINODE", "ae_title: MUCH-TOO-LONG-AE-TITLE"), "node.ae_title"),
        (EXAMPLE.replace("send_to: [pacs]", "send_to: [archive]"), "unknown destination 'archive'"),
        (
            EXAMPLE.replace(
                "match: {Modality: CT}", "match: {Modality: CT, SeriesDescription: '('}"
            ),
            "routes.0.match.SeriesDescription",
        ),
        (
            EXAMPLE.replace("match: {Modality: CT}", "match: {Modalty: CT}"),
            "routes.0.match.Modalty",
        ),
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
    with pytest.raises(ValidationError, match="frozen"):
        settings.node.dicom_port = 1  # type: ignore[misc]


_SENDER = "sender-token-for-the-pacs-0001"


def _sources(**extra: object) -> dict[str, object]:
    return {"url": "http://127.0.0.1:8042/dicom-web"} | extra


def test_sender_tokens_map_each_token_to_its_source() -> None:
    settings = load_settings(
        overrides={
            "sources": {
                "pacs": {"dicomweb": _sources(), "api_tokens": [_SENDER]},
                "archive": {
                    "dimse": {"ae_title": "ARCHIVE", "host": "127.0.0.1", "port": 104},
                    "api_tokens": ["sender-token-for-the-archive"],
                },
            }
        }
    )
    assert settings.sender_tokens == {_SENDER: "pacs", "sender-token-for-the-archive": "archive"}
    assert _SENDER not in settings.api_tokens  # a sender token is not an API token
    assert _SENDER not in repr(settings.sources["pacs"])  # a secret, not printed


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sources": {"pacs": {"dicomweb": _sources(), "api_tokens": ["short"]}}}, "at least 16"),
        (
            {
                "sources": {
                    "a": {"dicomweb": _sources(), "api_tokens": [_SENDER]},
                    "b": {"dicomweb": _sources(), "api_tokens": [_SENDER]},
                }
            },
            "sources.b.api_tokens: the same token is also given to source 'a'",
        ),
        (
            {
                "api": {"tokens": [_SENDER]},
                "sources": {"pacs": {"dicomweb": _sources(), "api_tokens": [_SENDER]}},
            },
            "sources.pacs.api_tokens: a sender token must differ from the API tokens",
        ),
    ],
)
def test_sender_tokens_are_checked(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides=overrides)
    assert message in str(info.value)


def test_sender_token_must_differ_from_the_environment_api_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AINODE_API_TOKEN", _SENDER)
    with pytest.raises(ConfigError, match="must differ from the API tokens"):
        load_settings(
            overrides={"sources": {"pacs": {"dicomweb": _sources(), "api_tokens": [_SENDER]}}}
        )


_DIMSE = {"dimse": {"ae_title": "PACS", "host": "127.0.0.1", "port": 104}}


@pytest.mark.parametrize("name", ["old-pacs", "pacs_2", "site.a", "P" * 64])
def test_source_and_destination_names_that_fit(name: str) -> None:
    settings = load_settings(overrides={"sources": {name: _DIMSE}, "destinations": {name: _DIMSE}})
    assert name in settings.sources and name in settings.destinations


@pytest.mark.parametrize("section", ["sources", "destinations"])
@pytest.mark.parametrize("name", ["P" * 65, "my pacs", "pacs/2", "pacs?x=1", "pâcs", ""])
def test_source_and_destination_names_are_checked(section: str, name: str) -> None:
    """They are stored in 64-character columns and appear in URLs and metrics."""
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={section: {name: _DIMSE}})
    assert f"{section}: Value error, name {name!r}: a name is 1-64 characters" in str(info.value)


def test_a_bad_destination_name_in_a_file_is_named(tmp_path: Path) -> None:
    text = EXAMPLE.replace("  pacs: {dimse:", "  main pacs: {dimse:").replace(
        "send_to: [pacs]", "send_to: [main pacs]"
    )
    with pytest.raises(ConfigError, match="destinations: Value error, name 'main pacs'"):
        load_settings(_write(tmp_path, text))
