"""Benchmark blocks of issue 17 on the tiny GPT: unlearning of synthetic facts (``gpt``) and
the alignment methods (``alignment``), run alone. ``benchmarks/unlearning.py`` imports the
same functions (``hyplex.models.alignment.benchmark_blocks``) for its full JSON.

Reproduce (last stdout line: one JSON object with keys ``gpt`` and ``alignment``)::

    .venv/bin/python benchmarks/unlearning_gpt_alignment.py --quick --seeds 3
    .venv/bin/python benchmarks/unlearning_gpt_alignment.py --quick --only gpt
    .venv/bin/python benchmarks/unlearning_gpt_alignment.py --quick --seeds 1 --only alignment \
        --figures out/figures     # + dpo_vs_ppo_alignment.png (G's cosine along training)

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
from pathlib import Path

from hyplex.models.alignment.benchmark_blocks import alignment_block, gpt_block


def dynamics_figure(path: Path, seed: int = 0, steps: int = 30) -> None:
    """The cosine of G (and of each component's gradient) along DPO and PPO training on the
    tiny GPT (seed ``seed``), as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hyplex.models.alignment.preference_dynamics import ParityPreference, track_dpo, track_ppo
    from hyplex.models.alignment.tiny_gpt import TinyGPTConfig, make_facts, train_tiny_gpt
    from hyplex.optics.atomic_io import atomic_path

    facts = make_facts(40, 4, 16, seed=seed)
    base = train_tiny_gpt(
        facts, TinyGPTConfig(facts.vocabulary.size, d_model=32), steps=300, seed=seed
    )
    preference = ParityPreference(facts.subset(range(60)))
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for axis, trace in zip(
        axes,
        (
            track_dpo(base, preference, steps, seed=seed),
            track_ppo(base, preference, steps, seed=seed),
        ),
        strict=True,
    ):
        axis.axhline(0, color="grey", lw=0.8)
        axis.plot(trace.cosine, "k-", lw=2, label="whole objective")
        for name, values in trace.components.items():
            axis.plot(values, lw=1, label=name)
        axis.set_title(f"{trace.method}: cos(grad L, grad NLL of final answers)")
        axis.set_xlabel("training step")
    axes[0].set_ylabel("cosine of G")
    axes[1].legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller facts, fewer steps")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (>= 1)")
    parser.add_argument("--only", choices=("gpt", "alignment"), help="run one block")
    parser.add_argument("--figures", type=Path, help="write the DPO/PPO figure in this folder")
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
    if args.figures is not None:
        dynamics_figure(args.figures / "dpo_vs_ppo_alignment.png")
        result["figures"] = [str(args.figures / "dpo_vs_ppo_alignment.png")]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
