"""``lipkit score VIDEO [AUDIO]``: the lip-sync score of a video (SyncNet's LSE-C / LSE-D)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from lipkit.cli_options import SUPPRESS, key_value


def add_score_parser(sub: Any) -> None:
    score = sub.add_parser(
        "score",
        help="lip-sync score of a video: LSE-C, LSE-D and the audio offset, per face track",
    )
    score.add_argument("video", help="the video to score")
    score.add_argument("audio", nargs="?", help="the speech (default: the video's own sound)")
    score.add_argument("--scorer", default="auto", help="scorer name (syncnet), or auto")
    score.add_argument(
        "-p", "--param", action="append", type=key_value, default=[], metavar="KEY=VALUE",
        help="a scorer parameter (repeatable)",
    )  # fmt: skip
    score.add_argument(
        "--min-track",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="shortest face track scored (default 1 s)",
    )
    score.add_argument("--face-detector", default=SUPPRESS, help="face processor name, or auto")
    score.add_argument("--device", default=SUPPRESS, help="auto, cpu, cuda, cuda:1, mps")
    score.add_argument("--json", action="store_true", help="machine-readable output")
    score.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    from lipkit.config import load_settings
    from lipkit.scoring import score

    overrides: dict[str, Any] = {}
    if "device" in vars(args):
        overrides["device"] = args.device
    if "face_detector" in vars(args):
        overrides["face"] = {"detector": args.face_detector}
    report = score(
        args.video,
        args.audio,
        scorer=args.scorer,
        settings=load_settings(overrides),
        params=dict(args.param),
        min_track_seconds=args.min_track,
    )
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
        return 0
    print(
        f"{report.video.name}: LSE-C {report.lse_c:.3f}  LSE-D {report.lse_d:.3f}  "
        f"offset {report.offset:+d} frames  ({report.scorer}, {len(report.tracks)} face "
        f"track(s), {report.frames} frames at {report.fps:g} fps)"
    )
    if len(report.tracks) > 1:
        for track in report.tracks:
            s = track.score
            print(
                f"  frames {track.start_frame}-{track.start_frame + track.frames - 1}: "
                f"LSE-C {s.lse_c:.3f}  LSE-D {s.lse_d:.3f}  offset {s.offset:+d}"
            )
    return 0
