"""``lipkit avatar prepare FACE -o NAME`` and ``lipkit avatar list``: avatars for live use."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lipkit.cli_options import SUPPRESS, add_backend_options, add_face_options, job_kwargs


def add_avatar_parser(sub: Any) -> None:
    avatar = sub.add_parser("avatar", help="prepare and list avatars for lipkit live")
    actions = avatar.add_subparsers(dest="avatar_command", required=True, metavar="ACTION")
    prepare = actions.add_parser(
        "prepare",
        help="decode, track and crop an idle face video (or a still) once, for live use",
    )
    prepare.add_argument("face", help="the idle face: a video (played back and forth) or a still")
    prepare.add_argument(
        "-o", "--output", required=True, metavar="NAME",
        help="avatar name (kept in $LIPKIT_HOME/avatars) or a folder path",
    )  # fmt: skip
    prepare.add_argument(
        "--seconds", type=float, default=None,
        help="use the video's first SECONDS (default: all of it, up to 60 s)",
    )  # fmt: skip
    prepare.add_argument(
        "--fps", type=float, default=SUPPRESS, help="frame rate of a still's avatar (default 25)"
    )
    prepare.add_argument("--force", action="store_true", help="replace an avatar of that name")
    prepare.add_argument("--json", action="store_true", help="machine-readable output")
    add_backend_options(prepare)
    add_face_options(prepare)
    prepare.set_defaults(func=cmd_avatar_prepare)

    listing = actions.add_parser("list", help="the avatars in $LIPKIT_HOME/avatars")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_avatar_list)


def cmd_avatar_prepare(args: argparse.Namespace) -> int:
    from lipkit.live import prepare_avatar

    kwargs = job_kwargs(args)
    avatar = prepare_avatar(
        args.face,
        args.output,
        settings=kwargs["settings"],
        params=kwargs["params"],
        seconds=args.seconds,
        force=args.force,
    )
    info = avatar.info
    avatar.close()
    if args.json:
        print(json.dumps({"path": str(avatar.path), **info.model_dump(mode="json")}, indent=2))
        return 0
    kind = "still" if info.still else f"{info.num_frames} frames at {info.fps:g} fps"
    print(
        f"avatar {info.name}: {kind}, {info.width}x{info.height}, face in {info.face_frames} "
        f"frame(s), {info.crop_size} px crops for {info.backend} ({avatar.path})\n"
        f"run it: lipkit live {args.output}"
    )
    return 0


def _avatar_rows(home: Path) -> list[dict[str, Any]]:
    from lipkit.errors import InputError
    from lipkit.live import load_avatar

    rows: list[dict[str, Any]] = []
    folder = home / "avatars"
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name.startswith(".") or not path.is_dir():
            continue
        try:
            with load_avatar(path) as avatar:
                info = avatar.info.model_dump(mode="json")
        except InputError as exc:
            info = {"name": path.name, "error": str(exc)}
        size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        rows.append({**info, "path": str(path), "bytes": size})
    return rows


def cmd_avatar_list(args: argparse.Namespace) -> int:
    from lipkit.cli_commands import _table as table
    from lipkit.config import load_settings

    rows = _avatar_rows(load_settings().home)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no avatars yet: lipkit avatar prepare FACE -o NAME")
        return 0
    lines = [
        (
            r["name"],
            r.get("backend", "-"),
            r.get("error") or f"{r['width']}x{r['height']}, {r['num_frames']} frame(s)",
            f"{r['bytes'] / 2**20:.1f} MiB",
        )
        for r in rows
    ]
    print(table(lines, ("avatar", "backend", "frames", "on disk")))
    return 0
