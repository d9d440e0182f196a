"""The value types settings share."""

from typing import Annotated

from pydantic import Field

PositiveInt = Annotated[int, Field(gt=0)]
PositiveSeconds = Annotated[float, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Percent = Annotated[float, Field(gt=0, le=100)]
# 0 disables the timeout it configures.
OptionalSeconds = Annotated[float, Field(ge=0)]
