"""Write a full-size Wav2Lip checkpoint with random weights in the published format.

    python tests/bench/make_wav2lip_checkpoint.py OUT.pth

Compute does not depend on weight values, so this stands in for wav2lip_gan.pth (which cannot be
downloaded on our machines) in speed and memory measurements. Layout as published: a dict with
``state_dict`` (``module.`` prefixed keys), ``optimizer``, ``global_step`` and ``global_epoch``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wav2lip_helpers import random_state_dict, save_published  # noqa: E402


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    save_published(random_state_dict(seed=0), out, module_prefix=True)
    print(out, f"{out.stat().st_size / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
