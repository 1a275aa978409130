"""A RetryPolicy's waits, recorded instead of slept."""

from __future__ import annotations


class RecordedSleeps(list):
    """Stands in for time.sleep/asyncio.sleep in a RetryPolicy: records each wait, waits not."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.append(seconds)
