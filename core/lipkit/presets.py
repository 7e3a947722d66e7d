"""Named bundles of settings. A preset sits below the config file, env and flags."""

from __future__ import annotations

from typing import Any

from lipkit.errors import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    "talking-head": {
        "face": {"smoothing": 5, "detect_every": 5, "blend_radius": 6},
        "output": {"crf": 19, "x264_preset": "medium"},
    },
    "music-video": {
        # singers move: detect more often, smooth less, loop the footage under the song
        "length_policy": "loop",
        # the model hears the singer, not the drums (needs a separator: lipkit-demucs)
        "audio": {"separate_vocals": True},
        "face": {"smoothing": 3, "detect_every": 2, "blend_radius": 8, "max_gap": 6},
        "output": {"crf": 19, "x264_preset": "medium"},
    },
    "social": {
        # small files, quick turnaround
        "face": {"smoothing": 5, "detect_every": 6, "blend_radius": 6},
        "output": {"crf": 23, "x264_preset": "fast", "audio_bitrate": "96k"},
    },
    "film": {
        # quality first: steadier boxes, softer seams, near-transparent encode
        "face": {"smoothing": 9, "detect_every": 3, "blend_radius": 10},
        "output": {"crf": 16, "x264_preset": "slow", "audio_bitrate": "192k"},
    },
}

DESCRIPTIONS = {
    "talking-head": "the defaults: one speaker facing the camera",
    "music-video": "moving performers: vocals separated from the music, frequent detection, "
    "light smoothing, footage looped",
    "social": "small files, fast encode (CRF 23, 96 kbps audio)",
    "film": "quality first: steadier boxes, softer blend, CRF 16",
}


def preset_values(name: str) -> dict[str, Any]:
    """The settings a preset sets, or ConfigError listing the presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
