"""lipkit's CLI-worded errors rewritten for the hosts: request fields, no server paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lipkit.errors import ModelError
from lipkit.host_errors import HostWords, public_path, rewrite
from lipkit.service.words import HTTP_WORDS, error_info

pytest.importorskip("fastapi")


def test_flags_and_paths_in_the_requests_words() -> None:
    error = ModelError(
        "backend 'wav2lip' needs 'wav2lip_gan.pth', not found in /srv/lipkit/models/wav2lip",
        hint="download it, or pass --param checkpoint=PATH; or use --precision fp16 and --seed 3",
    )
    info = error_info(error)
    assert info.type == "ModelError"
    assert "/srv" not in info.message and "not found in a folder on the server" in info.message
    assert info.hint is not None and "--" not in info.hint
    assert 'the request field "params" ({"checkpoint": PATH})' in info.hint
    assert 'the service\'s "precision" setting' in info.hint and 'field "seed"' in info.hint


def test_a_files_name_is_kept_and_punctuation_after_a_path_stays() -> None:
    text = rewrite("cannot read /tmp/lipkit-x/jobs/abc/face.png: broken.", HTTP_WORDS)
    assert text == "cannot read face.png: broken."
    assert public_path("C:\\Users\\me\\models\\s3fd.pth") == "s3fd.pth"


_WORD = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)


@given(
    folders=st.lists(_WORD, min_size=1, max_size=4),
    flag=st.lists(st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8), min_size=1),
    before=_WORD,
)
def test_no_absolute_path_or_flag_survives(
    folders: list[str], flag: list[str], before: str
) -> None:
    path = "/" + "/".join(folders)
    text = f"{before} {path} then --{'-'.join(flag)} (see {path}/x.pth)."
    words = HostWords(flag=lambda name, value: f"<{name}>", path=public_path)
    out = rewrite(text, words)
    assert not re.search(r"(^|\s|\()/\w", out), out
    assert "--" not in out and f"<{'-'.join(flag)}>" in out and "x.pth" in out


def test_the_service_says_it_in_request_fields(
    tmp_path: Path, sample_portrait: Path, sample_speech: Path
) -> None:
    from test_service import serve, submit

    from lipkit.service.models import ServiceConfig

    with serve(ServiceConfig(state_dir=tmp_path / "state")) as base:
        reply = submit(base, sample_portrait, sample_speech, backend="no-such-backend")
        assert reply.status_code == 422
        detail = reply.json()["detail"]
        assert detail["type"] == "PluginError" and "." not in detail["type"]
        text = f"{detail['message']} {detail.get('hint') or ''}"
        assert "--" not in text and str(tmp_path) not in text
        assert '"lipkit plugins" on the server' in text
