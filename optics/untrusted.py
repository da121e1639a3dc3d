"""Bounds on network configs read from files a user hands in (decoders, bundles, surrogates).

A model file is a small JSON config beside its tensors. The tensors' sizes are bounded by the
file, but the config says how many modules to build, and building happens before the tensors
can be compared with the network: a 200-byte config with ``n_stages = 10**6`` builds millions
of Python modules (even on torch's ``meta`` device, which holds no storage; measured: 10,000
MST stages took 84 s and 2.6 GB), and ``depth = 64`` in a U-Net overflows its
``base * 2**depth`` channels. So the integers of a config are capped before anything is built,
far above any network hyplex trains:

    repeat counts (``n_stages``, ``n_blocks``, ``blocks``, ``members``, ``n_heads``)   <= 64
    doubling depths (``depth``, ``levels``: channels grow as 2**depth)                <= 12
    every other integer (widths, channel and band counts, features)                   <= 65,536

(a ``seed`` sizes nothing and is not capped).

Widths under the cap can still describe a network far larger than its file; the callers then
build on the ``meta`` device and compare shapes with the stored tensors before allocating.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["MAX_COUNT", "MAX_DEPTH", "MAX_SIZE", "check_config_limits", "check_state_shapes"]

MAX_COUNT = 64
MAX_DEPTH = 12
MAX_SIZE = 1 << 16
_COUNTS = frozenset({"n_stages", "n_blocks", "blocks", "members", "n_heads"})
_DEPTHS = frozenset({"depth", "levels"})
_UNSIZED = frozenset({"seed"})  # integers that size nothing


def check_config_limits(config: Mapping, where: str) -> None:
    """Refuse a config whose integers (top level, or inside lists) exceed the module's caps.

    Raises
    ------
    ValueError
        Naming ``where`` (the file), the key, its value and the cap.
    """
    for key, value in config.items():
        if key in _UNSIZED:
            continue
        items = value if isinstance(value, list | tuple) else (value,)
        limit = MAX_COUNT if key in _COUNTS else MAX_DEPTH if key in _DEPTHS else MAX_SIZE
        for item in items:
            if isinstance(item, int) and not isinstance(item, bool) and item > limit:
                raise ValueError(
                    f"{where}: {key} = {item} is more than {limit:,}, the most hyplex builds "
                    "from a file (a config asking for it is corrupt or not hyplex's)"
                )


def check_state_shapes(expected: Mapping, state: Mapping, where: str = "") -> None:
    """The tensors of ``state`` (or their shapes, as a safetensors header gives them) against
    a (meta-built) ``expected`` state dict: the same names and shapes, else a ValueError naming
    the first differences (after ``where: ``)."""
    prefix = f"{where}: " if where else ""
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{prefix}the stored tensors do not fit the configured network (missing "
            f"{missing[:5] or 'none'}, unexpected {extra[:5] or 'none'})"
        )
    for key, tensor in expected.items():
        stored = state[key]
        shape = tuple(stored.shape if hasattr(stored, "shape") else stored)
        if shape != tuple(tensor.shape):
            raise ValueError(
                f"{prefix}tensor {key} has shape {shape}, the configured network has "
                f"{tuple(tensor.shape)}"
            )
