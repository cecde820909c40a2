"""Reliability scenarios against a private RabbitMQ node (RELIABILITY.md section 5.1).

Run them with ``python -m kiwipy_reliability [--full] [--only NAME] [--json-only]``.
"""

from kiwipy_reliability.base import STANDARD_FIGURES, Scale, ScenarioResult

__all__ = ["STANDARD_FIGURES", "Scale", "ScenarioResult"]
