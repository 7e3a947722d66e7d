"""The face settings a job runs with: the user's, with the detector precision the memory plan
chose, and ``select = speaker`` turned into the index of the face that talks."""

from __future__ import annotations

from lipkit.config import FaceSettings, LipkitSettings
from lipkit.media.track import AudioTrack
from lipkit.plans import MemoryPlan
from lipkit.resolver import Selection
from lipkit.scoring.speaker import speaker_face_settings


def job_face_settings(
    selection: Selection, settings: LipkitSettings, memory: MemoryPlan, heard: AudioTrack
) -> FaceSettings:
    """The face settings of the job ``selection`` plans (a notice says which face speaks)."""
    face = settings.face
    if selection.speaker is not None and selection.face_processor is not None:
        face = speaker_face_settings(
            selection.face_info,
            selection.face_processor,
            selection.speaker,
            settings,
            heard,
            selection.plan.notices,
        )
    if face.detector_precision == "auto":
        detect = memory.stage_precision.get("detect", "fp32")
        face = face.model_copy(
            update={"detector_precision": "fp16" if detect == "fp16" else "fp32"}
        )
    return face
