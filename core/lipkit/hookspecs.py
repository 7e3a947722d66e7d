"""The plugin author's guide: the six hook families of lipkit.

A plugin is a module (or object) registered under the entry-point group ``lipkit``::

    [project.entry-points.lipkit]
    mybackend = "lipkit_mybackend.plugin"

and implements any of the hooks below with :data:`lipkit.hookimpl`. Every hook follows the
*collect-then-resolve* pattern: it returns a list of candidates (possibly empty) and **never
chooses**. pluggy calls every implementation; the core's resolver reads each candidate's
declaration (its ``spec``) together with the hardware and the user's settings and picks one per
stage, recording why. Hooks must be cheap: import heavy libraries (torch, diffusers) lazily, inside
the methods that do the work, so ``lipkit plugins`` and ``lipkit plan`` stay fast and a broken
optional dependency only breaks the stage that needs it.

Names are global: two plugins registering the same name in one family is an error reported by
``lipkit plugins``. The full contract for each family, with the conformance kit that checks it,
is in ``spec/`` at the repository root.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from lipkit.interfaces import (
        AudioEncoder,
        FaceProcessor,
        Generator,
        MemoryPolicy,
        OutputEncoder,
    )
    from lipkit.specs import DeviceInfo

PROJECT = "lipkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def lipkit_devices() -> list[DeviceInfo]:
    """Report the compute devices this implementation can see.

    Returns a list of :class:`lipkit.specs.DeviceInfo`, one per device, with total and currently
    free memory in bytes, whether the memory is shared with the CPU, and fp16/bf16 support. A
    detector that finds nothing (its library is not installed, no driver) returns ``[]``; it
    never raises. When two detectors report the same ``id`` the first registered wins; the
    builtin detector always reports ``cpu``.
    """
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def lipkit_memory_policies() -> list[MemoryPolicy]:
    """Offer memory policies (:class:`lipkit.interfaces.MemoryPolicy` instances).

    ``policy.plan(request)`` turns a device, the job's frame size and length and the generator's
    declared costs (``model_memory``, ``memory_per_item``, ``min_memory``) into a
    :class:`lipkit.plans.MemoryPlan`: batch size per stage, chunk length, precision, offload and
    reasons for each choice. It must raise :class:`lipkit.errors.ResourceError` *before any work
    starts* when even one item cannot fit, naming the setting to change.

    ``policy.on_oom(event)`` is called only for real out-of-memory errors
    (``torch.OutOfMemoryError``, ``MemoryError``); it returns a smaller plan to retry with, or
    ``None`` to stop. A retried batch must produce the same output as the smaller batch would have.
    """
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def lipkit_audio_encoders() -> list[AudioEncoder]:
    """Offer audio encoders (:class:`lipkit.interfaces.AudioEncoder` instances).

    ``encoder.encode(audio, fps=, num_frames=, params=, device=)`` receives the speech track
    (float32 mono at ``spec.sample_rate``, 16 kHz) as an array or a
    :class:`lipkit.media.track.AudioTrack` read by sample range (never materialise a long one:
    see ``spec/audio.md``) and returns
    :class:`lipkit.interfaces.AudioFeatures` whose ``window(frames)`` gives float32 conditioning
    shaped ``[len(frames), *spec.frame_shape]`` for any output frame indices, in any order,
    independently of which other frames are asked for. Same input, same output (deterministic).
    Audio of zero length raises :class:`lipkit.errors.InputError`.
    """
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def lipkit_face_processors() -> list[FaceProcessor]:
    """Offer face processors (:class:`lipkit.interfaces.FaceProcessor` instances).

    ``processor.open(settings, device)`` returns a session. ``session.detect(frames)`` takes
    ``uint8 [B, H, W, 3]`` RGB frames and returns one :class:`lipkit.interfaces.Detection` or
    ``None`` per frame (the main face: the largest, or the one nearest the previous box); a frame
    without a face is ``None``, never an exception. ``session.align(detection, size)`` returns a
    2x3 float affine matrix mapping frame pixels into a ``size`` x ``size`` crop whose content
    is upright and framed as the generator's ``alignment`` expects. Tracking across frames,
    interpolation over short gaps, smoothing, cropping and the soft paste-back are done by the
    core from these two methods, so every processor gets them alike.
    """
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def lipkit_generators() -> list[Generator]:
    """Offer generators (:class:`lipkit.interfaces.Generator` instances): the backends.

    The ``spec`` (:class:`lipkit.specs.GeneratorSpec`) declares what the generator needs: the
    audio encoder it consumes, its crop size and alignment, whether it needs landmarks or accepts
    a still image, the devices and minimum memory it runs with, its precisions, memory costs,
    weights, preferred length policy and its ``quality`` rank for ``backend=auto``. Its
    ``params_model`` (pydantic, ``extra="forbid"``) validates user parameters. Give each
    weight file a ``param`` (a path field of the params) and read the path from it: a file the
    user keeps outside the model home (a host's folders, ``model_paths``) reaches you there.

    ``generator.load(ctx)`` loads weights (raising :class:`lipkit.errors.ModelError` naming the
    missing or wrong file and how to get it) and returns a session whose ``generate(batch)``
    maps ``uint8 [B, S, S, 3]`` crops plus ``[B, *frame_shape]`` audio to ``uint8 [B, S, S, 3]``
    generated crops, deterministic for ``ctx.seed`` on one device. Batches arrive in output
    order with at most the plan's batch size; chunks of decoded frames are a multiple of
    ``spec.chunk_multiple``, but frames without a face are left out, so a batch can be shorter.
    With ``spec.history_frames`` set, ``batch.history`` holds the last generated crops;
    ``batch.features`` is always the whole track's audio features. A long batch reports through
    ``batch.on_progress(done, total)`` (slices, denoising steps) and lets any exception it
    raises propagate: that is how a job is cancelled inside a batch.

    Two overrides change how the pipeline drives a generator (see spec/generators.md):
    ``generator.frame_size(params, width, height)`` makes it a whole-frame generator (no face
    processing; frames framed to that size in, the output video's frames out), and
    ``generator.frame_batches(params, num_frames)`` fixes its batches (windows) exactly.
    """
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def lipkit_encoders() -> list[OutputEncoder]:
    """Offer output encoders (:class:`lipkit.interfaces.OutputEncoder` instances).

    The pipeline writes the output in segments: ``encoder.open_segment(path, stream, settings)``
    returns a sink taking ``uint8 [B, H, W, 3]`` frames; ``sink.close()`` completes a segment and
    must leave a complete, independently decodable file at ``path`` (file encoders) so a killed job
    can resume from the last closed segment. ``encoder.finalize(request)`` joins the segments and
    muxes the audio, cut to ``request.audio_seconds``, writing the result *elsewhere first* and
    renaming it onto ``request.output``, so the output path only ever holds a complete file.
    Equal segments and settings give a byte-identical output.
    """
    raise NotImplementedError  # a specification: plugins implement it
