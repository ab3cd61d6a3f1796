# Minimal stub for croniter 7 (which ships no types): only what streaq calls.
import datetime
from typing import overload

class CroniterError(ValueError): ...
class CroniterBadCronError(CroniterError): ...
class CroniterBadDateError(CroniterError): ...

class croniter:
    def __init__(
        self,
        expr_format: str,
        start_time: datetime.datetime | float | None = None,
        ret_type: type = ...,
        day_or: bool = True,
        max_years_between_matches: int | None = None,
    ) -> None: ...
    @overload
    def get_next(
        self,
        ret_type: type[datetime.datetime],
        start_time: datetime.datetime | float | None = None,
        update_current: bool = True,
    ) -> datetime.datetime: ...
    @overload
    def get_next(
        self,
        ret_type: type[float] | None = None,
        start_time: datetime.datetime | float | None = None,
        update_current: bool = True,
    ) -> float: ...
