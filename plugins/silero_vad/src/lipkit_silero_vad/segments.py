"""From per-window speech probabilities to speech segments, in samples.

Our own implementation of the rules silero's ``get_speech_timestamps`` documents (with no
maximum chunk length): speech starts at the first window at or above ``threshold``; inside
speech, a window below the exit threshold starts a candidate end, which a window back at or
above ``threshold`` cancels and which becomes the end once the silence has lasted
``min_silence_ms``; chunks not longer than ``min_speech_ms`` are dropped; then each chunk is
padded by ``speech_pad_ms`` (neighbours closer than twice that meet halfway). Integer samples
throughout, so the result is exact.
"""

from __future__ import annotations

from collections.abc import Sequence

from lipkit_silero_vad.params import SAMPLES_PER_MS, WINDOW, SileroVadParams

Segment = tuple[int, int]


def raw_segments(
    probs: Sequence[float], num_samples: int, params: SileroVadParams
) -> list[Segment]:
    """Speech chunks before padding: ``[start, end)`` samples, sorted, disjoint."""
    enter, leave = params.threshold, params.exit_threshold
    min_speech = params.min_speech_ms * SAMPLES_PER_MS
    min_silence = params.min_silence_ms * SAMPLES_PER_MS
    found: list[Segment] = []
    start: int | None = None  # the open chunk's first sample
    quiet_from: int | None = None  # where the silence that may end it began
    for index, prob in enumerate(probs):
        here = index * WINDOW
        loud = prob >= enter
        if start is None:
            if loud:
                start = here
            continue
        if loud:
            quiet_from = None
        elif prob < leave:
            if quiet_from is None:
                quiet_from = here
            if here - quiet_from >= min_silence:
                if quiet_from - start > min_speech:
                    found.append((start, quiet_from))
                start = quiet_from = None
    if start is not None and num_samples - start > min_speech:
        found.append((start, num_samples))
    return found


def pad_segments(segments: Sequence[Segment], num_samples: int, pad_ms: int) -> list[Segment]:
    """``segments`` widened by ``pad_ms`` each side within ``[0, num_samples]``; where two are
    closer than twice the pad, each takes half of the gap (the first the smaller half)."""
    pad = pad_ms * SAMPLES_PER_MS
    starts = [s for s, _ in segments]
    ends = [e for _, e in segments]
    for i in range(len(segments)):
        if i == 0:
            starts[0] = max(0, starts[0] - pad)
        if i + 1 < len(segments):
            gap = starts[i + 1] - ends[i]
            if gap < 2 * pad:
                ends[i] += gap // 2
                starts[i + 1] = max(0, starts[i + 1] - gap // 2)
            else:
                ends[i] = min(num_samples, ends[i] + pad)
                starts[i + 1] = max(0, starts[i + 1] - pad)
        else:
            ends[i] = min(num_samples, ends[i] + pad)
    return list(zip(starts, ends, strict=True))


def speech_segments(
    probs: Sequence[float], num_samples: int, params: SileroVadParams
) -> list[Segment]:
    """The padded speech segments of a track of ``num_samples`` samples, ``[start, end)``."""
    return pad_segments(raw_segments(probs, num_samples, params), num_samples, params.speech_pad_ms)
