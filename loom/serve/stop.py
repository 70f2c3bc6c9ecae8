"""Text-level stop sequences (OpenAI's ``stop``): cut the output before the first match.

A stop string may be split over several tokens, or be a part of one, so matching is
done on the text: :class:`StopMatcher` releases generated text as soon as it cannot be
the start of a stop string, holds back the tail that could still become one, and
reports the match. The stop string itself is never emitted.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopMatcher"]


class StopMatcher:
    """Streaming search for the earliest of several stop strings.

    Parameters
    ----------
    stops : sequence of str
        The stop strings (empty strings are ignored).

    Examples
    --------
    >>> m = StopMatcher(["\\n\\n", "END"])
    >>> m.feed("Hello E"), m.feed("N"), m.feed("D and more")
    ('Hello ', '', '')
    >>> m.stopped
    True
    >>> m2 = StopMatcher(["END"])
    >>> m2.feed("THE E"), m2.flush()
    ('THE ', 'E')
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.stopped = False
        self._held = ""

    def feed(self, text: str) -> str:
        """Add generated ``text``; return what can be emitted now.

        Once a stop string is found, :attr:`stopped` is true, the returned text ends
        right before the match, and later calls return ``""``.
        """
        if self.stopped:
            return ""
        buffer = self._held + text
        if not self.stops:
            self._held = ""
            return buffer
        cuts = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        if cuts:
            self.stopped = True
            self._held = ""
            return buffer[: min(cuts)]
        keep = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if buffer.endswith(stop[:k]):
                    keep = k
                    break
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The held-back text at the end of generation (it never became a stop string)."""
        held, self._held = self._held, ""
        return "" if self.stopped else held
