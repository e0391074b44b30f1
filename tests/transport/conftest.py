"""Fixtures shared by the transport tests."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.transport.conformance", "tests.transport.helpers")
