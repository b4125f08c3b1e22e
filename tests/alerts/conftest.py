"""The API's two organisations (tests/api) and the dashboard's world, for alert tests."""

from tests.api.conftest import fleets, fresh_rate_limits, operator  # noqa: F401
from tests.dashboard.conftest import world  # noqa: F401
