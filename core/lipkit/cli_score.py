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


def add_compare_parser(sub: Any) -> None:
    compare = sub.add_parser(
        "compare",
        help="run one clip through several backends and score each output (an A/B table)",
    )
    compare.add_argument("face", help="face video or still image")
    compare.add_argument("audio", help="the speech")
    compare.add_argument(
        "-b", "--backend", action="append", required=True, dest="backends", metavar="NAME",
        help="a backend to compare (repeat: --backend wav2lip --backend latentsync)",
    )  # fmt: skip
    compare.add_argument(
        "-p", "--param", action="append", type=key_value, default=[], metavar="KEY=VALUE",
        help="a parameter for every run (repeatable)",
    )  # fmt: skip
    compare.add_argument("--out-dir", default="compare", help="where the outputs go (compare/)")
    compare.add_argument("--scorer", default="auto", help="scorer name (syncnet), or auto")
    compare.add_argument("--json", action="store_true", help="machine-readable output")
    compare.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from lipkit.scoring.compare import compare

    report = compare(
        args.face,
        args.audio,
        args.backends,
        out_dir=args.out_dir,
        scorer=args.scorer,
        params=dict(args.param),
    )
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
        return 0
    source = "-" if report.source_motion is None else f"{report.source_motion:.2f}"
    print(f"{report.face.name} + {report.audio.name}, scored by {report.scorer}")
    print(f"{'BACKEND':<14}{'LSE-C':>8}{'LSE-D':>8}{'OFFSET':>8}{'MOTION':>8}{'SECONDS':>9}")
    for row in report.rows:
        if row.error is not None:
            print(f"{row.backend:<14}failed: {row.error}")
            continue
        print(
            f"{row.backend:<14}{row.lse_c:>8.3f}{row.lse_d:>8.3f}{row.offset:>+8d}"
            f"{row.mouth_motion:>8.2f}{row.seconds:>9.1f}"
        )
    print(f"mouth motion of the source: {source} (a generated mouth far above it flickers)")
    return 0 if any(row.error is None for row in report.rows) else 8
