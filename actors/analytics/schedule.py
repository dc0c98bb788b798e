"""When a rule is armed: weekly local-time windows in the camera's time zone.

Intrusion into a school yard matters at night, not during the break; a schedule says when a
rule watches. Windows are in the camera's local wall-clock time (its IANA ``timezone``), so a
"22:00-06:00" window follows daylight-saving changes where the zone has them, and a Seoul
camera's schedule means Seoul time whatever zone the servers run in.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from configs.analytics import ScheduleWindow

MINUTES_PER_DAY = 24 * 60


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class Schedule:
    """A set of weekly windows; :meth:`active` tells whether a capture time falls in one.

    Semantics of one window (``days``, ``start``, ``end``), in local time:

    * ``start < end``: active on each of ``days`` from ``start`` (inclusive) to ``end``
      (exclusive); ``end`` may be ``24:00``.
    * ``start >= end``: the window wraps midnight and the days are the days it *starts* on:
      ``days=[4], 22:00-06:00`` is Friday 22:00 to Saturday 06:00 (and not Thursday night's
      tail on Friday morning). ``start == end`` is a full 24 h from ``start``.

    No windows at all means always active.

    Args:
        windows: The windows; the schedule is active when any is.
        timezone: IANA name of the camera's time zone, e.g. ``Asia/Seoul``.

    Raises:
        ValueError: for an unknown time zone.
    """

    def __init__(self, windows: Sequence[ScheduleWindow], timezone: str) -> None:
        try:
            self.tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {timezone!r}") from None
        self.timezone = timezone
        self._windows = [(frozenset(w.days), _minutes(w.start), _minutes(w.end)) for w in windows]

    @property
    def always(self) -> bool:
        """True when there are no windows (the rule is never disarmed)."""
        return not self._windows

    def active(self, ts_epoch: float) -> bool:
        """Whether the capture time ``ts_epoch`` (epoch seconds) falls in a window."""
        if not self._windows:
            return True
        local = datetime.fromtimestamp(ts_epoch, self.tz)
        minute = local.hour * 60 + local.minute + local.second / 60.0
        day = local.weekday()
        yesterday = (day - 1) % 7
        for days, start, end in self._windows:
            if start < end:
                if day in days and start <= minute < end:
                    return True
            elif (day in days and minute >= start) or (yesterday in days and minute < end):
                return True
        return False
