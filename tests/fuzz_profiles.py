"""Hypothesis profiles of the fuzzing tests: `ci` (the default), `smoke` (quick soak runs) and
`long` (`make fuzz`), chosen by HYPOTHESIS_PROFILE."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# No per-example deadline: under tracemalloc on a shared CPU a legitimate input (a BMP with a
# bogus palette) took 2.5 s, 25 ms without it. Tests check behaviour, not wall-clock time; a hang
# is still caught by pytest-timeout, and memory by the tests' own bounds.
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", max_examples=800, deadline=None, derandomize=True, suppress_health_check=_QUIET)
settings.register_profile("smoke", max_examples=20, deadline=None, derandomize=True, suppress_health_check=_QUIET)
settings.register_profile("long", max_examples=20000, deadline=None, suppress_health_check=_QUIET)


def load_profile() -> settings:
    """The profile HYPOTHESIS_PROFILE names, loaded; it is what `settings.default` says from now on."""
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
    return settings.default
