"""Do the stages overlap? `lipkit bench` on one input: each stage alone, then a real run.

    python tests/bench/bench_overlap.py FACE AUDIO [lipkit bench flags...]

Prints the bench table; the last line compares end-to-end frames/s with the slowest single
stage's. On a machine where the slowest stage (usually the H.264 encoder) already uses every
core, the other stages compete with it for CPU, so the ratio is bounded by
encode-CPU / (encode-CPU + everything-else-CPU); the table's seconds give both.
"""

from __future__ import annotations

import sys

from lipkit.cli import main

if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    sys.exit(main(["bench", *sys.argv[1:]]))
