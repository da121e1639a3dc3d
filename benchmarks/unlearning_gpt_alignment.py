"""Benchmark blocks of issue 17 on the tiny GPT: unlearning of synthetic facts (``gpt``) and
the alignment methods (``alignment``), run alone. ``benchmarks/unlearning.py`` imports the
same functions (``hyplex.models.alignment.benchmark_blocks``) for its full JSON.

Reproduce (last stdout line: one JSON object with keys ``gpt`` and ``alignment``)::

    .venv/bin/python benchmarks/unlearning_gpt_alignment.py --quick --seeds 3
    .venv/bin/python benchmarks/unlearning_gpt_alignment.py --quick --only gpt

Timings depend on the machine's load (the team's 2 cores are shared).
"""
# ruff: noqa: E402  (thread settings must precede the imports that read them)

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse
import json
import sys
import time

from hyplex.models.alignment.benchmark_blocks import alignment_block, gpt_block


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller facts, fewer steps")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (>= 1)")
    parser.add_argument("--only", choices=("gpt", "alignment"), help="run one block")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    result = {}
    for name, block in (("gpt", gpt_block), ("alignment", alignment_block)):
        if args.only and args.only != name:
            continue
        start = time.perf_counter()
        result[name] = block(args.quick, args.seeds)
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
