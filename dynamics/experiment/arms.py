"""The arms of ``dynamics experiment longtail`` (light: its parser and its runner both read them)."""

from __future__ import annotations

ARMS = ("uniform", "pixels", "bootstrap", "oracle", "oracle-repeat")
