"""Particle-swarm optimisation on the unit box, batched: the whole swarm is one objective call.

The inertia-weight particle swarm of Shi & Eberhart ("A modified particle swarm optimizer",
IEEE ICEC 1998, 69), with the inertia decreasing linearly from 0.9 to 0.4 over the run (Shi &
Eberhart, CEC 1999, 1945). Particle ``i`` moves, per dimension, as::

    v_i <- w v_i + c1 r1 (p_i - x_i) + c2 r2 (g - x_i),   r1, r2 ~ U(0, 1)
    x_i <- x_i + v_i

where ``p_i`` is the best point the particle has seen and ``g`` the best of the swarm.
Velocities are clamped to ``max_velocity`` (a fraction of the box side) and particles that
leave ``[0, 1]^D`` stop at the wall with their velocity along that axis set to zero.

In hyplex it is the derivative-free baseline for inverse design (:mod:`hyplex.optics.inverse`),
the role a particle swarm plays in ALFRED (Getman et al., Light Sci. Appl. 10, 47 (2021)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

__all__ = ["SwarmResult", "particle_swarm"]


@dataclass
class SwarmResult:
    """Outcome of :func:`particle_swarm`.

    Attributes
    ----------
    best_position : tensor ``(D,)`` in the unit box.
    best_value : float, the objective there.
    evaluations : int, points evaluated (swarm size x iterations).
    history : list of float, the swarm's best value after each iteration.
    """

    best_position: torch.Tensor
    best_value: float
    evaluations: int
    history: list[float] = field(default_factory=list)


def particle_swarm(
    objective: Callable[[torch.Tensor], torch.Tensor],
    dimension: int,
    swarm_size: int = 24,
    iterations: int = 20,
    seed: int = 0,
    inertia: tuple[float, float] = (0.9, 0.4),
    cognitive: float = 2.0,
    social: float = 2.0,
    max_velocity: float = 0.25,
    initial: torch.Tensor | None = None,
    progress: bool = False,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> SwarmResult:
    """Minimise ``objective`` over ``[0, 1]^dimension`` with an inertia-weight particle swarm.

    Parameters
    ----------
    objective : callable mapping positions ``(S, D)`` to values ``(S,)`` (lower is better);
        called once per iteration with the whole swarm.
    dimension : D >= 1.
    swarm_size : S >= 2 particles.
    iterations : >= 1 swarm evaluations (the first is the random initial swarm).
    seed : seeds the initial swarm and the random factors.
    inertia : (start, end) inertia weight, linear in the iteration.
    cognitive, social : acceleration constants c1 (towards the particle's best) and c2
        (towards the swarm's best); 2 and 2 as in Shi & Eberhart 1998.
    max_velocity : largest step per iteration and axis, as a fraction of the box side.
    initial : optional ``(k, D)`` points in the box that replace the first ``k`` random
        particles (e.g. known good designs).
    progress : show a tqdm bar on stderr.

    Returns
    -------
    SwarmResult
    """
    if dimension < 1 or swarm_size < 2 or iterations < 1:
        raise ValueError(
            "need dimension >= 1, swarm_size >= 2 and iterations >= 1, got "
            f"{dimension}, {swarm_size}, {iterations}"
        )
    if not 0 < max_velocity <= 1:
        raise ValueError(
            f"max_velocity must lie in (0, 1] (fraction of the box), got {max_velocity}"
        )
    generator = torch.Generator().manual_seed(seed)

    def uniform(*shape):
        return torch.rand(*shape, generator=generator, dtype=dtype).to(device)

    position = uniform(swarm_size, dimension)
    if initial is not None:
        initial = torch.as_tensor(initial, dtype=dtype, device=position.device).reshape(
            -1, dimension
        )[:swarm_size]
        if (initial < 0).any() or (initial > 1).any():
            raise ValueError("initial particles must lie in the unit box [0, 1]^D")
        position[: initial.shape[0]] = initial
    velocity = (uniform(swarm_size, dimension) - 0.5) * max_velocity
    value = _evaluate(objective, position, swarm_size)
    best_position, best_value = position.clone(), value.clone()
    history = [float(best_value.min())]
    bar = tqdm(range(1, iterations), desc="particle swarm", disable=not progress, leave=False)
    for step in bar:
        fraction = step / max(iterations - 1, 1)
        weight = inertia[0] + (inertia[1] - inertia[0]) * fraction
        leader = best_position[best_value.argmin()]
        r1, r2 = uniform(swarm_size, dimension), uniform(swarm_size, dimension)
        velocity = (
            weight * velocity
            + cognitive * r1 * (best_position - position)
            + social * r2 * (leader - position)
        ).clamp(-max_velocity, max_velocity)
        moved = position + velocity
        position = moved.clamp(0.0, 1.0)
        velocity = torch.where(moved == position, velocity, torch.zeros_like(velocity))
        value = _evaluate(objective, position, swarm_size)
        improved = value < best_value
        best_position[improved], best_value[improved] = position[improved], value[improved]
        history.append(float(best_value.min()))
        bar.set_postfix(best=f"{history[-1]:.3g}")
    index = int(best_value.argmin())
    return SwarmResult(
        best_position=best_position[index].clone(),
        best_value=float(best_value[index]),
        evaluations=swarm_size * iterations,
        history=history,
    )


def _evaluate(objective, position: torch.Tensor, swarm_size: int) -> torch.Tensor:
    with torch.no_grad():
        value = torch.as_tensor(objective(position)).reshape(-1).to(position)
    if value.numel() != swarm_size:
        raise ValueError(
            f"objective must return one value per particle ({swarm_size}), got {value.numel()}"
        )
    # a failed evaluation (NaN) must never become the swarm's best
    return torch.nan_to_num(value, nan=float("inf"))
