"""Reliability scenarios against a private RabbitMQ node (RELIABILITY.md section 5.1).

Run them with ``python -m kiwipy.testing.reliability [--full] [--only NAME] [--json-only]``.
"""

from kiwipy.testing.reliability.base import STANDARD_FIGURES, Scale, ScenarioResult

__all__ = ["STANDARD_FIGURES", "Scale", "ScenarioResult"]
