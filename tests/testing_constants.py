"""Constants shared by test modules (importable as ``testing_constants``; never import conftest)."""

from __future__ import annotations

#: The API token every test node accepts (at least 16 characters, as the settings require).
TEST_API_TOKEN = "test-token-0123456789abcdef"
