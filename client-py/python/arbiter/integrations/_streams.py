"""Streams that record when they end: read to the end, closed early, left by ``with``,
broken by an error, or dropped unfinished (garbage collected)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any, Optional, Protocol

from arbiter.integrations._gate import Call, Usage


class Meter(Protocol):
    """Reads a provider's usage from the events of one stream."""

    def feed(self, event: Any) -> bool:
        """Take the usage an event carries; True when the caller must not see it (an
        event the adapter asked for and the caller did not)."""
        ...

    @property
    def usage(self) -> Optional[Usage]: ...


class _Recorded:
    def __init__(self, inner: Any, call: Call, meter: Meter) -> None:
        self._inner = inner
        self._call = call
        self._meter = meter

    def _metadata(self, early: bool) -> dict[str, str]:
        return {"stream": "closed_early"} if early else {"stream": "complete"}

    def __getattr__(self, name: str) -> Any:
        # Everything else (``response``, helpers) is the SDK's own stream.
        return getattr(self._inner, name)

    def __del__(self) -> None:
        # A stream dropped unfinished still settles; at interpreter exit nothing can.
        call = self.__dict__.get("_call")
        if call is not None and not sys.is_finalizing():
            call.finish(self._meter.usage, None, self._metadata(True))


class RecordedStream(_Recorded):
    """A sync SDK stream (``openai.Stream``, ``anthropic.Stream``) that records at its end."""

    def __init__(self, inner: Any, call: Call, meter: Meter) -> None:
        super().__init__(inner, call, meter)
        self._iter: Iterator[Any] = iter(inner)

    def __iter__(self) -> RecordedStream:
        return self

    def __next__(self) -> Any:
        while True:
            try:
                event = next(self._iter)
            except StopIteration:
                self._call.finish(self._meter.usage, None, self._metadata(False))
                raise
            except Exception as error:
                self._call.finish(self._meter.usage, error)
                raise
            if not self._meter.feed(event):
                return event

    def close(self) -> None:
        """Close the SDK stream and record what was used until now."""
        try:
            self._inner.close()
        finally:
            self._call.finish(self._meter.usage, None, self._metadata(True))

    def __enter__(self) -> RecordedStream:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()


class AsyncRecordedStream(_Recorded):
    """An async SDK stream that records at its end."""

    def __init__(self, inner: Any, call: Call, meter: Meter) -> None:
        super().__init__(inner, call, meter)
        self._iter: AsyncIterator[Any] = inner.__aiter__()

    def __aiter__(self) -> AsyncRecordedStream:
        return self

    async def __anext__(self) -> Any:
        while True:
            try:
                event = await self._iter.__anext__()
            except StopAsyncIteration:
                await self._call.afinish(self._meter.usage, None, self._metadata(False))
                raise
            except Exception as error:
                await self._call.afinish(self._meter.usage, error)
                raise
            if not self._meter.feed(event):
                return event

    async def close(self) -> None:
        try:
            await self._inner.close()
        finally:
            await self._call.afinish(self._meter.usage, None, self._metadata(True))

    async def __aenter__(self) -> AsyncRecordedStream:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()
