"""What every settings model shares: frozen, no unknown keys; AE title and token checks."""

from __future__ import annotations

import re

from pydantic import (
    BaseModel,
    ConfigDict,
    SecretStr,
)

AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE VR: no backslash, no controls
#: Names of sources and destinations: stored in String(64) columns (instances.sender,
#: deliveries.destination, inference_requests.source) and shown in URLs and metrics.
NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def check_ae_title(value: str) -> str:
    if not AE_TITLE.match(value) or not value.strip():
        raise ValueError("an AE title is 1-16 printable characters, no backslash")
    return value.strip()


def check_tokens(value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
    if any(len(t.get_secret_value()) < 16 for t in value):
        raise ValueError("an API token has at least 16 characters")
    return value


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
