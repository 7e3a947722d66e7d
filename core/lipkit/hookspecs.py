"""The plugin author's guide: the hook families of lipkit.

=========================== =========================================== ====================
hook                        returns                                     contract
=========================== =========================================== ====================
``lipkit_devices``          :class:`~lipkit.specs.DeviceInfo` list      ``spec/devices.md``
``lipkit_memory_policies``  :class:`~lipkit.interfaces.MemoryPolicy`    ``spec/memory.md``
``lipkit_audio_encoders``   :class:`~lipkit.interfaces.AudioEncoder`    ``spec/audio.md``
``lipkit_face_processors``  :class:`~lipkit.interfaces.FaceProcessor`   ``spec/face.md``
``lipkit_generators``       :class:`~lipkit.interfaces.Generator`       ``spec/generators.md``
``lipkit_output_encoders``  :class:`~lipkit.interfaces.OutputEncoder`   ``spec/encoders.md``
``lipkit_vocal_separators`` :class:`~lipkit.interfaces.VocalSeparator`  ``spec/audio-stages.md``
``lipkit_voice_detectors``  :class:`~lipkit.interfaces.VoiceActivity..` ``spec/audio-stages.md``
``lipkit_sync_scorers``     :class:`~lipkit.interfaces.SyncScorer`      ``spec/scoring.md``
=========================== =========================================== ====================

The last two are the audio front-end: stages that work on the speech before the audio encoder
(vocal separation, voice activity); the core adds the crop and the loudness stage itself.
``lipkit_sync_scorers`` measures lip sync (``lipkit score``: SyncNet's LSE-C / LSE-D).

The public names a plugin uses are listed in ``spec/api.md`` (generated from the code).

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
        SyncScorer,
        VocalSeparator,
        VoiceActivityDetector,
    )
    from lipkit.specs import DeviceInfo

PROJECT = "lipkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def lipkit_devices() -> list[DeviceInfo]:
    """Report the compute devices this implementation can see.

    :returns: a list of :class:`lipkit.specs.DeviceInfo`, one per device, with total and
        currently free memory in bytes, whether the memory is shared with the CPU, and
        fp16/bf16 support; ``[]`` when it finds nothing (its library is not installed, no
        driver). It never raises.

    When two detectors report the same ``id`` the first registered wins; the builtin detector
    always reports ``cpu``. Called on every plan: keep it cheap, import the GPU library inside.

    Example::

        @lipkit.hookimpl
        def lipkit_devices():
            if importlib.util.find_spec("torch") is None:  # no library: no devices
                return []
            import torch
            found = []
            for i in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(i)
                name = torch.cuda.get_device_name(i)
                found.append(DeviceInfo(id=f"cuda:{i}", kind="cuda", name=name,
                                        total_memory=total, free_memory=free))
            return found

    Contract and conformance checks: ``spec/devices.md``.
    """
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def lipkit_memory_policies() -> list[MemoryPolicy]:
    """Offer memory policies (:class:`lipkit.interfaces.MemoryPolicy` instances).

    :returns: a list of policies; the resolver uses the one ``memory.policy`` names, else the
        highest ``spec.rank``.

    ``policy.plan(request)`` turns a device, the job's frame size and length and the
    generator's declared costs (``model_memory``, ``memory_per_item``, ``min_memory``) into a
    :class:`lipkit.plans.MemoryPlan`: batch size per stage, chunk length, precision, offload and
    reasons for each choice. It must raise :class:`lipkit.errors.ResourceError` *before any work
    starts* when even one item cannot fit, naming the setting to change
    (:func:`lipkit.plans.not_enough_memory` gives the shared hint). ``policy.on_oom(event)`` is
    called only for real out-of-memory errors (``torch.OutOfMemoryError``, ``MemoryError``); it
    returns a smaller plan to retry with, or ``None`` to stop. A retried batch must produce the
    same output as the smaller batch would have.

    Example::

        class HalfMemory(MemoryPolicy):
            spec = MemoryPolicySpec(name="half", description="half the free memory", rank=1)

            def plan(self, request):
                ...  # fit request.generator's costs into request.device.free_memory / 2

        @lipkit.hookimpl
        def lipkit_memory_policies():
            return [HalfMemory()]

    Contract and conformance checks: ``spec/memory.md``.
    """
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def lipkit_audio_encoders() -> list[AudioEncoder]:
    """Offer audio encoders (:class:`lipkit.interfaces.AudioEncoder` instances).

    :returns: a list of encoders; a generator names the one it consumes in
        ``GeneratorSpec.audio_encoder``.

    ``encoder.encode(audio, fps=, num_frames=, params=, device=)`` receives the speech track
    (float32 mono at ``spec.sample_rate``, 16 kHz) as an array or a
    :class:`lipkit.media.track.AudioTrack` read by sample range (never materialise a long one)
    and returns :class:`lipkit.interfaces.AudioFeatures` whose ``window(frames)`` gives float32
    conditioning shaped ``[len(frames), *spec.frame_shape]`` for any output frame indices, in
    any order, independently of which other frames are asked for. Same input, same output.
    Audio of zero length raises :class:`lipkit.errors.InputError`. An encoder whose frame
    features depend only on nearby samples can run on live audio: it sets
    ``spec.streaming = True`` and returns from ``stream_window(params, fps)`` the samples it
    reads before and after a frame's start (``spec/live.md``).

    Example::

        @lipkit.hookimpl
        def lipkit_audio_encoders():
            return [LogMelEncoder()]  # spec = AudioEncoderSpec(name="logmel", ...)

    Contract and conformance checks: ``spec/audio.md``.
    """
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def lipkit_face_processors() -> list[FaceProcessor]:
    """Offer face processors (:class:`lipkit.interfaces.FaceProcessor` instances).

    :returns: a list of processors; the resolver picks one whose ``spec.alignment`` (and
        landmarks) the generator needs.

    ``processor.open(settings, device)`` returns a session for the job's
    :class:`lipkit.config.FaceSettings`. ``session.detect(frames)`` takes ``uint8 [B, H, W, 3]``
    RGB frames and returns one :class:`lipkit.interfaces.Detection` or ``None`` per frame (the
    main face); a frame without a face is ``None``, never an exception.
    ``session.align(detection, size)`` returns a 2x3 float affine matrix mapping frame pixels
    into a ``size`` x ``size`` crop framed as the generator's ``alignment`` expects. Tracking,
    interpolation over short gaps, smoothing, cropping and the soft paste-back are done by the
    core from these two methods, so every processor gets them alike.

    Example::

        @lipkit.hookimpl
        def lipkit_face_processors():
            return [BlazeFaceProcessor()]  # spec = FaceProcessorSpec(name="blazeface", ...)

    Contract and conformance checks: ``spec/face.md``.
    """
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def lipkit_generators() -> list[Generator]:
    """Offer generators (:class:`lipkit.interfaces.Generator` instances): the backends.

    :returns: a list of generators; ``--backend NAME`` picks one, ``auto`` the highest
        ``spec.quality`` that runs on the device.

    The ``spec`` (:class:`lipkit.specs.GeneratorSpec`) declares what the generator needs: the
    audio encoder it consumes, its crop size and alignment, whether it accepts a still image,
    the devices and minimum memory it runs with, its precisions, memory costs and weights. Its
    ``params_model`` (pydantic, ``extra="forbid"``) validates user parameters; give each weight
    file a ``param`` (a path field of the params) and read the path from it.
    ``generator.load(ctx)`` loads weights (a :class:`lipkit.errors.ModelError` names a missing
    or wrong file and how to get it) and returns a session whose ``generate(batch)`` maps
    ``batch.images`` ``uint8 [B, S, S, 3]`` plus ``[B, *frame_shape]`` audio to ``uint8
    [B, S, S, 3]`` generated images, deterministic for ``ctx.seed`` on one device. A long batch
    reports through ``batch.on_progress(done, total)`` and lets what it raises propagate (that
    is how a job is cancelled). Overrides change how the pipeline drives it:
    ``whole_frame_size`` (whole frames instead of face crops), ``frame_batches`` (fixed
    windows), ``job_spec`` (a declaration that depends on the parameters) and
    ``user_batch_size`` (a batch parameter of its own). ``spec.streaming = True`` says it can
    run live (``lipkit live``: one frame at a time from its crop and audio window; its audio
    encoder must stream too, see ``AudioEncoder.stream_window`` and ``spec/live.md``).

    Example::

        class Echo(Generator):
            spec = GeneratorSpec(name="echo", display_name="Echo", audio_encoder="mel",
                                 crop_size=96, description="returns its input")

            def load(self, ctx):
                return EchoSession()  # generate(batch) -> batch.images.copy()

        @lipkit.hookimpl
        def lipkit_generators():
            return [Echo()]

    Contract and conformance checks: ``spec/generators.md``; a whole plugin in
    ``spec/example-plugin``.
    """
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def lipkit_output_encoders() -> list[OutputEncoder]:
    """Offer output encoders (:class:`lipkit.interfaces.OutputEncoder` instances).

    :returns: a list of encoders; the resolver picks a file encoder by the output's suffix
        (``spec.suffixes``), and a ``frames`` encoder when the output is ``None``.

    The pipeline writes the output in segments: ``encoder.open_segment(path, stream,
    settings)`` returns a sink taking ``uint8 [B, H, W, 3]`` frames; ``sink.close()`` completes
    a segment and must leave a complete, independently decodable file at ``path`` (file
    encoders) so a killed job can resume from the last closed segment.
    ``encoder.finalize(request)`` joins the segments and muxes the audio, cut to
    ``request.audio_seconds``, writing the result *elsewhere first* and renaming it onto
    ``request.output``, so the output path only ever holds a complete file. Equal segments and
    settings give a byte-identical output. (Called ``lipkit_encoders`` before 0.2.)

    Example::

        @lipkit.hookimpl
        def lipkit_output_encoders():
            return [WebmEncoder()]  # spec = EncoderSpec(name="webm", kind="file",
                                    #                    suffixes=(".webm",))

    Contract and conformance checks: ``spec/encoders.md``.
    """
    raise NotImplementedError  # a specification: plugins implement it


@hookspec(
    warn_on_impl=DeprecationWarning(
        "the hook lipkit_encoders is deprecated: rename it lipkit_output_encoders (same contract)"
    )
)
def lipkit_encoders() -> list[OutputEncoder]:
    """Deprecated name of :func:`lipkit_output_encoders` (before 0.2); still collected."""
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def lipkit_vocal_separators() -> list[VocalSeparator]:
    """Offer vocal separators (:class:`lipkit.interfaces.VocalSeparator` instances).

    :returns: a list of separators; the resolver uses one when vocal separation is on
        (``audio.separate_vocals``, ``--separate-vocals``, the ``music-video`` preset): the one
        named by ``audio.separator``, else the highest ``spec.rank`` (its missing weights are
        then an error naming them).

    ``separator.separate(source, params=, model_home=, device=, progress=)`` reads the cropped
    audio (:class:`lipkit.interfaces.AudioSource`) in blocks and returns the vocals as a 16 kHz
    mono :class:`lipkit.media.track.AudioTrack` of the source's length. The audio encoder hears
    that track; the output video keeps the original mix. Memory stays flat in the audio's
    length. A checkpoint that needs arbitrary code to unpickle is refused
    (:class:`lipkit.errors.ModelError`).

    Example::

        @lipkit.hookimpl
        def lipkit_vocal_separators():
            return [DemucsSeparator()]  # spec = AudioStageSpec(name="demucs", ...)

    Contract and conformance checks: ``spec/audio-stages.md``.
    """
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def lipkit_voice_detectors() -> list[VoiceActivityDetector]:
    """Offer voice-activity detectors (:class:`lipkit.interfaces.VoiceActivityDetector`).

    :returns: a list of detectors; the resolver uses one when ``audio.silence`` is ``keep`` or
        ``closed``: the one named by ``audio.voice_detector``, else the highest ``spec.rank``.

    ``detector.speech(track, params=, device=, progress=)`` returns the speech in a 16 kHz mono
    track as sorted, disjoint ``(start, end)`` seconds, reading the track in blocks. Frames
    outside them keep the source mouth (``silence=keep``) or get a closed one (``closed``).

    Example::

        @lipkit.hookimpl
        def lipkit_voice_detectors():
            return [SileroVad()]  # spec = AudioStageSpec(name="silero-vad", ...)

    Contract and conformance checks: ``spec/audio-stages.md``.
    """
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def lipkit_sync_scorers() -> list[SyncScorer]:
    """Offer lip-sync scorers (:class:`lipkit.interfaces.SyncScorer` instances).

    :returns: a list of scorers; ``lipkit score`` uses the one named (``--scorer``), else the
        highest ``spec.rank`` (its missing weights are then an error naming them).

    ``scorer.score(crops, audio, params=, model_home=, device=, progress=)`` gets one face
    track's crops (``uint8 [n, crop_size, crop_size, 3]`` RGB blocks at ``spec.fps``, framed
    as ``spec.crop_scale`` says) and the 16 kHz speech from the track's first frame, and returns
    a :class:`lipkit.interfaces.SyncScore` (LSE-D, LSE-C, the best offset). Memory stays flat
    in the track's length.

    Example::

        @lipkit.hookimpl
        def lipkit_sync_scorers():
            return [SyncNetScorer()]  # spec = ScorerSpec(name="syncnet", ...)

    Contract and conformance checks: ``spec/scoring.md``.
    """
    raise NotImplementedError  # a specification: plugins implement it
