"""The strict pydantic base every medad configuration is built on (protocol schema, model configs).

Unknown keys are refused, values are not coerced between types (a string is never read as a number) and a
validated configuration is immutable.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A pydantic model with unknown keys forbidden, strict types and frozen instances."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
