"""lipkit hook implementations of the Wav2Lip plugin (entry point ``wav2lip`` in group ``lipkit``).

It offers the ``wav2lip`` generator and the ``s3fd`` face processor. The audio front end is the
core's ``mel`` encoder, which reproduces the reference spectrogram.
"""

from __future__ import annotations

from lipkit.hookspecs import hookimpl
from lipkit.interfaces import FaceProcessor, Generator
from lipkit_wav2lip.generator import Wav2LipGenerator
from lipkit_wav2lip.s3fd import S3FDFaceProcessor


@hookimpl
def lipkit_generators() -> list[Generator]:
    """The ``wav2lip`` generator."""
    return [Wav2LipGenerator()]


@hookimpl
def lipkit_face_processors() -> list[FaceProcessor]:
    """The ``s3fd`` face detector (used when ``s3fd.pth`` is present or given)."""
    return [S3FDFaceProcessor()]
