import pytest

# The shared suite lives outside test_*.py modules: ask pytest to rewrite its asserts too, for useful failure output.
pytest.register_assert_rewrite(f"{__name__}.conformance")
