"""The long-video plan: which frames each 81-frame window generates, and which of them are kept.

What the reference does (MeiGen-AI/InfiniteTalk, ``wan/multitalk.py``,
``InfiniteTalkPipeline.generate_infinitetalk``, streaming mode; ``generate_infinitetalk.py``
defaults ``--frame_num 81`` and ``--motion_frame 9``):

- The first window is frames ``0 .. 80``. Its first latent slot is the VAE encoding of the
  reference image, kept clean at every step, so output frame 0 is the portrait itself.
- Every later window starts ``81 - 9 = 72`` frames after the previous one. Its first 9 frames are
  the last 9 decoded frames of the previous window, re-encoded to 3 latent frames and kept clean
  at every step. Only its other 72 frames are new output.
- When a window would run past the audio, the reference extends the audio embeddings with the
  track's last frames mirrored (``torch.flip``) and trims the video to the audio length
  afterwards. Up to 71 of the last window's frames are driven by audio that is not there.

What we do instead (issue 6, "Long video, done right"), for any length ``N >= 1``:

- ``N <= window``: one window of the smallest valid size ``4k + 1 >= N``. That leaves at most
  3 frames after the end of the audio (:attr:`Window.pad`). **Their audio is silence**: the
  audio encoder encodes the clip alone (its own frames' features are exactly the clip's) and
  gives the ``pad`` frames the features of a silent track of ``pad`` frames (``pad * 640``
  zero samples, 16 kHz / 25 fps) encoded alone: real wav2vec2 features of digital silence,
  never zero vectors (zeros are the model's "no audio" input for guidance) and never replayed
  speech. After
  the audio ends nothing is said, so silence is the honest continuation: the mouth closes instead
  of holding (repeat) or replaying (mirror) the last phoneme. The padded frames are decoded and
  dropped.
- ``N > window``: full windows every ``window - motion`` frames while they fit. The final window
  is **shifted back** so that it ends exactly on frame ``N - 1``. Its size is the smallest valid
  ``4k + 1`` that holds ``motion`` conditioning frames plus the frames still missing. Its first
  ``motion`` frames are already generated output. Between them and the first new frame lie
  0 to 3 frames that are generated again and dropped. No window in this case sees audio past
  the end of the track, and none is padded.

Every window size is ``4k + 1`` (the Wan VAE's causal time stride of 4). Every frame
``0 .. N-1`` is new output of exactly one window. Motion frames always come from output that
earlier windows already produced. A window's reference frame (for video input: the source
frame at that time, as the reference does with ``extract_specific_frames``) is its
:attr:`Window.start`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lipkit.errors import ConfigError

FPS = 25
"""Output frames per second; also the rate of the audio features (one per video frame)."""

SAMPLES_PER_FRAME = 16_000 // FPS
"""16 kHz audio samples behind one video frame (640): the length of one padded silent frame."""

VAE_TIME_STRIDE = 4
"""Video frames per latent frame after the first: window sizes are ``4k + 1``."""

DEFAULT_WINDOW = 81
DEFAULT_MOTION = 9


def is_valid_length(frames: int) -> bool:
    """True when ``frames`` is ``4k + 1`` (``k >= 0``), a length the Wan VAE encodes exactly."""
    return frames >= 1 and (frames - 1) % VAE_TIME_STRIDE == 0


def valid_length_at_least(frames: int) -> int:
    """The smallest ``4k + 1`` that is ``>= frames`` (``frames >= 1``)."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    return 1 + VAE_TIME_STRIDE * -(-(frames - 1) // VAE_TIME_STRIDE)


def latent_frames(frames: int) -> int:
    """Latent frames of a ``4k + 1``-frame clip (``k + 1``)."""
    if not is_valid_length(frames):
        raise ValueError(f"{frames} frames is not 4k+1")
    return 1 + (frames - 1) // VAE_TIME_STRIDE


def silence_frames(num_frames: int, window: int = DEFAULT_WINDOW) -> int:
    """Frames of silence after the audio that the plan for ``num_frames`` generates and drops:
    ``valid_length_at_least(N) - N`` (0 to 3) when the whole clip is one window, else 0."""
    if 1 <= num_frames <= window:
        return valid_length_at_least(num_frames) - num_frames
    return 0


class Window(BaseModel):
    """One window of the plan. Frame numbers are output (= audio) frame numbers.

    The window generates frames ``start .. start + frames - 1`` (``frames`` is ``4k + 1``):

    - the first ``motion`` of them are conditioning: already generated output, re-encoded and
      kept clean (0 for the first window, whose first latent slot is the reference image);
    - ``new_start .. new_stop - 1`` are new output, kept;
    - any frame in between (``start + motion .. new_start - 1``, 0 to 3 frames, final window
      only) is generated again and dropped;
    - the last ``pad`` frames lie after the end of the audio (a single short clip only): their
      audio is silence, and they are dropped.
    """

    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=0)
    start: int = Field(ge=0)
    frames: int = Field(ge=1)
    motion: int = Field(ge=0)
    new_start: int = Field(ge=0)
    new_stop: int = Field(ge=1)
    pad: int = Field(0, ge=0, lt=VAE_TIME_STRIDE)

    @model_validator(mode="after")
    def _check(self) -> Window:
        if not is_valid_length(self.frames):
            raise ValueError(f"window size {self.frames} is not 4k+1")
        if not self.start + self.motion <= self.new_start < self.new_stop:
            raise ValueError("new frames must follow the motion frames and not be empty")
        if self.new_stop + self.pad != self.stop:
            raise ValueError("new frames must run to the window's end (less the padding)")
        return self

    @property
    def stop(self) -> int:
        """One past the window's last frame."""
        return self.start + self.frames

    @property
    def audio_start(self) -> int:
        """First audio frame fed to this window (its first frame)."""
        return self.start

    @property
    def audio_stop(self) -> int:
        """One past the last real audio frame fed to this window; ``pad`` silent frames follow."""
        return self.stop - self.pad

    @property
    def keep(self) -> slice:
        """The window's own frames (0 = its first) that are new output."""
        return slice(self.new_start - self.start, self.new_stop - self.start)

    @property
    def motion_frames(self) -> range:
        """Output frames re-encoded as this window's clean leading frames."""
        return range(self.start, self.start + self.motion)

    @property
    def discarded(self) -> int:
        """Frames generated again over earlier output and dropped (final window, 0 to 3)."""
        return self.new_start - self.start - self.motion

    @property
    def latent_frames(self) -> int:
        """Latent frames of this window (``(frames - 1) / 4 + 1``)."""
        return latent_frames(self.frames)

    @property
    def motion_latent_frames(self) -> int:
        """Leading latent slots kept clean: the motion frames' latents, or 1 (the reference
        image) for the first window."""
        return latent_frames(self.motion) if self.motion else 1

    @property
    def reference_frame(self) -> int:
        """The frame of a source video that conditions this window (for video input)."""
        return self.start


def _check_sizes(window: int, motion: int) -> None:
    if not is_valid_length(window) or window < 1 + VAE_TIME_STRIDE:
        raise ConfigError(
            f"window size {window} is not valid",
            hint="use 4k+1 frames with k >= 1, e.g. 81 (the published model's size)",
        )
    if not is_valid_length(motion) or motion >= window:
        raise ConfigError(
            f"motion frames {motion} are not valid for windows of {window} frames",
            hint="use 4k+1 frames, fewer than the window size, e.g. 9",
        )


def plan_windows(
    num_frames: int, window: int = DEFAULT_WINDOW, motion: int = DEFAULT_MOTION
) -> list[Window]:
    """The windows that produce exactly ``num_frames`` output frames (see the module doc)."""
    _check_sizes(window, motion)
    if num_frames < 1:
        raise ConfigError(
            f"the audio is {num_frames} frames long",
            hint="give speech of at least 1/25 s",
        )
    if num_frames <= window:
        frames = valid_length_at_least(num_frames)
        return [
            Window(
                index=0,
                start=0,
                frames=frames,
                motion=0,
                new_start=0,
                new_stop=num_frames,
                pad=frames - num_frames,
            )
        ]
    plan = [Window(index=0, start=0, frames=window, motion=0, new_start=0, new_stop=window)]
    done = window
    while done < num_frames:
        start = done - motion
        if start + window <= num_frames:
            plan.append(
                Window(
                    index=len(plan),
                    start=start,
                    frames=window,
                    motion=motion,
                    new_start=done,
                    new_stop=start + window,
                )
            )
            done = start + window
            continue
        # Final window: just big enough, shifted back to end on the last frame.
        frames = valid_length_at_least(num_frames - done + motion)
        plan.append(
            Window(
                index=len(plan),
                start=num_frames - frames,
                frames=frames,
                motion=motion,
                new_start=done,
                new_stop=num_frames,
            )
        )
        done = num_frames
    return plan
