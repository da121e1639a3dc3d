"""Inverse design of one unit cell: the design whose transmittance best matches a target T(λ).

The design space is one pillar of a shape family in a square cell on a substrate
(:class:`~hyplex.optics.design_space.DesignSpace`): a vector of lengths in nm inside a box
that encodes the fabrication constraints (minimum feature and gap, thickness bounds). The
gradient stages move an unbounded latent mapped into the box by a sigmoid, so every iterate
is fabricable. The loss is the mean squared error over the target's wavelengths; results
report its root (RMS error).

Three methods (:func:`design`):

- ``"rcwa"``: screen random designs with one batched RCWA call; optionally Adam (Kingma & Ba,
  ICLR 2015) through the differentiable RCWA (:mod:`hyplex.optics.rcwa`) from the best few,
  batched; then L-BFGS with a strong-Wolfe line search (Nocedal & Wright, *Numerical
  Optimization*, 2nd ed., Alg. 7.5 and 3.5) from the best few distinct designs, one after the
  other. Resonant spectra make long curved valleys in which Adam zig-zags (40 steps from
  near a known disk design reached RMS 6e-3) while L-BFGS converges (RMS 1e-7 in ~15
  gradients), so the default skips Adam.
- ``"surrogate"``: screening and batched Adam through a cheap differentiable surrogate of the
  spectrum (thousands of designs, dozens of restarts); the best surrogate optima are checked
  by one batched RCWA call and the best ones polished by L-BFGS through the RCWA.
- ``"swarm"``: the derivative-free baseline, an inertia-weight particle swarm
  (:mod:`hyplex.optics.swarm`), as in ALFRED (Getman et al., Light Sci. Appl. 10, 47 (2021)),
  each iteration one batched RCWA call.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .design_space import DesignSpace, RCWASpectrum
from .geometry import ParametricShape
from .memory import available_memory_bytes, check_memory, fits_hint, rcwa_memory_bytes
from .swarm import particle_swarm

__all__ = ["DesignSpace", "RCWASpectrum", "Budget", "InverseResult", "design", "METHODS"]

METHODS = ("rcwa", "surrogate", "swarm")


@dataclass(frozen=True)
class Budget:
    """How much work each method does. RCWA calls dominate the wall time.

    Attributes
    ----------
    screen : random designs evaluated by one RCWA call before gradient descent (``"rcwa"``).
    restarts : best screened designs refined by batched Adam through the RCWA (``"rcwa"``).
    steps : Adam steps through the RCWA (``"rcwa"``). 0 (the default) goes from the screen
        straight to the L-BFGS polish: on the benchmark's targets (benchmarks/inverse.py) a
        batched Adam stage cost more RCWA calls than it saved.
    learning_rate : Adam step size in the sigmoid latent (all Adam stages).
    surrogate_screen, surrogate_restarts, surrogate_steps : the same three for the
        surrogate stage (``"surrogate"``).
    verify : surrogate optima whose spectrum is checked by one RCWA call (``"surrogate"``).
    polish : best designs polished by L-BFGS through the RCWA, one after the other
        (``"rcwa"`` and ``"surrogate"``).
    polish_evaluations : RCWA gradient evaluations per polish (0 skips the polish).
    tolerance_rms : stop polishing once the RMS error is below this.
    swarm_size, swarm_iterations : particle swarm (``"swarm"``); one RCWA call per iteration.
    """

    screen: int = 48
    restarts: int = 4
    steps: int = 0
    learning_rate: float = 0.05
    surrogate_screen: int = 4096
    surrogate_restarts: int = 32
    surrogate_steps: int = 300
    verify: int = 8
    polish: int = 4
    polish_evaluations: int = 20
    tolerance_rms: float = 1e-4
    swarm_size: int = 24
    swarm_iterations: int = 20


@dataclass
class InverseResult:
    """The best design found and how it was found.

    Attributes
    ----------
    shape : the unit cell's :class:`~hyplex.optics.geometry.ParametricShape` (nm).
    thickness_nm : pillar thickness.
    space : the :class:`DesignSpace` searched.
    wavelengths_nm, target_T, achieved_T : ``(L,)``; ``achieved_T`` is the RCWA spectrum of
        the design (unpolarised), at the harmonics of the search.
    rms_error : ``sqrt(mean((achieved_T - target_T)^2))``.
    wall_s : wall time of the search, s (a surrogate's training is not included).
    method : ``"rcwa"``, ``"surrogate"`` or ``"swarm"``.
    rcwa_evaluations : designs whose spectrum the RCWA computed (forward passes; the
        gradient stages add a backward pass to most of them).
    history : best RMS error so far after each RCWA stage step: swarm iterations; or the
        screen (or verified surrogate optima), Adam steps if any, then L-BFGS evaluations.
    settings : materials, harmonics and the like, for the record.
    """

    shape: ParametricShape
    thickness_nm: float
    space: DesignSpace
    wavelengths_nm: np.ndarray
    target_T: np.ndarray
    achieved_T: np.ndarray
    rms_error: float
    wall_s: float
    method: str
    rcwa_evaluations: int
    history: list[float] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-able summary (lengths in nm)."""
        parameters = dict(
            zip(self.shape.parameter_names, self.shape.to_vector().tolist(), strict=True)
        )
        return {
            "family": self.space.family,
            "parameters_nm": parameters,
            "thickness_nm": self.thickness_nm,
            "period_nm": self.space.period_nm,
            "thickness_bounds_nm": list(self.space.thickness_bounds_nm),
            "min_feature_nm": self.space.min_feature_nm,
            **self.settings,
            "method": self.method,
            "rms_error": self.rms_error,
            "wall_s": self.wall_s,
            "rcwa_evaluations": self.rcwa_evaluations,
            "wavelengths_nm": self.wavelengths_nm.tolist(),
            "target_T": self.target_T.tolist(),
            "achieved_T": self.achieved_T.tolist(),
            "history_rms": self.history,
        }

    def plot(self, figure=None):
        """Target vs achieved spectrum beside the unit cell; returns the Figure."""
        import matplotlib.pyplot as plt

        figure = figure if figure is not None else plt.figure(figsize=(9.0, 3.8))
        spectrum_ax, cell_ax = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1.0]})
        spectrum_ax.plot(self.wavelengths_nm, self.target_T, "k--", label="target")
        spectrum_ax.plot(self.wavelengths_nm, self.achieved_T, "tab:red", label="achieved (RCWA)")
        spectrum_ax.set(xlabel="wavelength (nm)", ylabel="transmittance", ylim=(0, 1.02))
        spectrum_ax.set_title(f"{self.method}: RMS error {self.rms_error:.4f}", fontsize=9)
        spectrum_ax.legend(fontsize=8)
        self.shape.plot(self.space.period_nm, ax=cell_ax)
        cell_ax.set_title(f"{self.shape}\nthickness {self.thickness_nm:.1f} nm", fontsize=7)
        figure.tight_layout()
        return figure


# --------------------------------------------------------------------------- search stages


def _mse(spectra: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error ``(...)``; NaN (a failed solve) becomes +inf so it never wins."""
    return torch.nan_to_num(((spectra - target) ** 2).mean(-1), nan=math.inf)


def _adam(forward, target, space, start, steps, learning_rate, progress, label):
    """Adam from each row of ``start`` ``(R, D)``; returns the best design, its MSE, history.

    Each iteration is one batched forward and backward call of ``forward``; the best iterate
    of every restart is kept (Adam need not decrease the loss monotonically).
    """
    latent = space.to_latent(start.detach()).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([latent], lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(steps, 1), eta_min=0.05 * learning_rate
    )
    best_loss = torch.full((start.shape[0],), math.inf, dtype=start.dtype, device=start.device)
    best = start.detach().clone()
    history = []
    bar = tqdm(range(steps + 1), desc=label, disable=not progress, leave=False)
    for step in bar:
        params = space.from_latent(latent)
        loss = _mse(forward(params), target)
        improved = loss.detach() < best_loss
        best[improved], best_loss[improved] = params.detach()[improved], loss.detach()[improved]
        history.append(math.sqrt(float(best_loss.min())))
        bar.set_postfix(rms=f"{history[-1]:.4f}")
        if step == steps:
            break
        optimizer.zero_grad()
        loss[torch.isfinite(loss)].sum().backward()
        latent.grad = torch.nan_to_num(latent.grad, nan=0.0, posinf=0.0, neginf=0.0)
        optimizer.step()
        schedule.step()
    return best, best_loss, history


def _lbfgs(forward, target, space, start, evaluations):
    """L-BFGS (strong-Wolfe line search) from one design ``(D,)`` in the sigmoid latent.

    Returns the best design seen, its MSE, the best RMS after each evaluation and the number
    of evaluations (each one forward and one backward pass of ``forward``).
    """
    latent = space.to_latent(start.detach()).clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [latent],
        lr=1.0,
        max_iter=evaluations,
        max_eval=evaluations,
        history_size=10,
        tolerance_grad=1e-12,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )
    best, best_loss, history = start.detach().clone(), math.inf, []

    def closure():
        nonlocal best, best_loss
        optimizer.zero_grad()
        params = space.from_latent(latent)
        loss = _mse(forward(params.unsqueeze(0)), target)[0]
        if not torch.isfinite(loss):  # a failed solve: report a flat, bad point
            return torch.tensor(math.inf, dtype=loss.dtype)
        loss.backward()
        if float(loss.detach()) < best_loss:
            best, best_loss = params.detach().clone(), float(loss.detach())
        history.append(math.sqrt(best_loss))
        return loss

    if evaluations > 0:
        optimizer.step(closure)
    return best, best_loss, history, len(history)


def _best(space, params: torch.Tensor, loss: torch.Tensor, count: int, spacing=0.05):
    """The ``count`` lowest-loss designs ``(count, D)`` that are pairwise at least ``spacing``
    apart in the unit box (greedy, best first), so that restarts explore distinct basins;
    topped up with the next best if too few are distinct."""
    order = torch.argsort(loss)
    unit = space.to_unit(params.detach())
    chosen: list[int] = []
    for index in order.tolist():
        if len(chosen) == count:
            break
        if not chosen or (unit[chosen] - unit[index]).norm(dim=-1).min() >= spacing:
            chosen.append(index)
    chosen += [i for i in order.tolist() if i not in chosen][: count - len(chosen)]
    return params[chosen]


def _check_surrogate(surrogate, wavelengths: torch.Tensor, space: DesignSpace, device):
    """A callable designs ``(..., D)`` -> ``(..., L)`` on the target's grid, as float64."""
    if surrogate is None:
        raise ValueError(
            "method='surrogate' needs surrogate=callable(params (..., D)) -> T (..., L)"
        )
    grid = getattr(surrogate, "wavelengths_nm", None)
    if grid is not None:
        grid = torch.as_tensor(grid, dtype=torch.float64).reshape(-1).cpu()
        if grid.shape != wavelengths.shape or not torch.allclose(
            grid, wavelengths.cpu(), atol=1e-6
        ):
            raise ValueError(
                f"the surrogate's wavelength grid ({grid.numel()} points, {float(grid[0]):g}-"
                f"{float(grid[-1]):g} nm) does not match the target's ({wavelengths.numel()} "
                f"points, {float(wavelengths[0]):g}-{float(wavelengths[-1]):g} nm); resample the "
                "target onto the surrogate's grid or train the surrogate on the target's"
            )
    dtype = torch.float64
    if isinstance(surrogate, torch.nn.Module):
        first = next(surrogate.parameters(), None)
        if first is not None:
            dtype, device = first.dtype, first.device

    def forward(params: torch.Tensor) -> torch.Tensor:
        out = torch.as_tensor(surrogate(params.to(device=device, dtype=dtype)))
        if out.shape[-1] != wavelengths.numel():
            raise ValueError(
                f"the surrogate returns {out.shape[-1]} values per design but the target has "
                f"{wavelengths.numel()} wavelengths"
            )
        return out.to(torch.float64)

    return forward


# --------------------------------------------------------------------------- driver


def _check_target(target_T, wavelengths_nm) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target (L,), wavelengths (L,))`` as float64 tensors, or a ValueError saying why not."""
    target = torch.as_tensor(np.asarray(target_T, dtype=np.float64)).reshape(-1)
    wavelengths = torch.as_tensor(np.asarray(wavelengths_nm, dtype=np.float64)).reshape(-1)
    if target.numel() != wavelengths.numel():
        raise ValueError(
            f"target_T has {target.numel()} values but wavelengths_nm has {wavelengths.numel()}: "
            "the target and the requested wavelength grid must match point for point"
        )
    if target.numel() == 0 or not torch.isfinite(target).all():
        raise ValueError("target_T must be a non-empty array of finite values")
    if (target < 0).any() or (target > 1).any():
        raise ValueError("target_T is a transmittance and must lie in [0, 1]")
    if not torch.isfinite(wavelengths).all() or (wavelengths <= 0).any():
        raise ValueError("wavelengths_nm must be positive and finite (nm)")
    return target, wavelengths


def _check_memory(method: str, budget: Budget, harmonics: int, grid, n_wavelengths: int) -> None:
    """Refuse, before the first solve, harmonics or a grid whose largest RCWA call (the
    screen without gradients, or a gradient step) cannot fit in memory."""
    batch = {"rcwa": budget.screen, "surrogate": budget.verify, "swarm": budget.swarm_size}
    graded = budget.restarts if method == "rcwa" and budget.steps > 0 else 1

    def needed(m: int, pixels) -> int:
        return max(
            rcwa_memory_bytes(m, pixels, batch=max(batch[method], 1), wavelengths=n_wavelengths),
            rcwa_memory_bytes(m, pixels, batch=graded, wavelengths=n_wavelengths, grad=True),
        )

    available = available_memory_bytes()
    if needed(harmonics, grid) <= available:
        return
    if needed(harmonics, 1) > available:
        check_memory(
            needed(harmonics, grid),
            f"harmonics={harmonics} ({(2 * harmonics + 1) ** 2:,} orders, {n_wavelengths} "
            "wavelengths)",
            setting="harmonics",
            value=harmonics,
            hint=fits_hint(lambda k: needed(k, grid), available, "harmonics"),
            available=available,
        )
    side = grid[0] if grid[0] == grid[1] else tuple(grid)
    check_memory(
        needed(harmonics, grid),
        f"grid={side} pixels per side at harmonics={harmonics}",
        setting="grid",
        value=side,
        hint=fits_hint(lambda k: needed(harmonics, k), available, "grid", low=1),
        available=available,
    )


def design(
    target_T,
    wavelengths_nm,
    family: str = "disk",
    method: str = "rcwa",
    *,
    period_nm: float = 400.0,
    thickness_bounds_nm: tuple[float, float] = (50.0, 300.0),
    min_feature_nm: float = 0.0,
    material="cSi",
    substrate="SiO2",
    superstrate="air",
    harmonics: int = 3,
    grid: tuple[int, int] = (48, 48),
    surrogate=None,
    budget: Budget | None = None,
    seed: int = 0,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> InverseResult:
    """Find the design whose unpolarised transmittance best matches ``target_T``.

    Parameters
    ----------
    target_T : ``(L,)`` target transmittance in [0, 1].
    wavelengths_nm : ``(L,)`` its wavelengths (nm), positive.
    family : shape family, a key of :data:`hyplex.optics.geometry.SHAPES`.
    method : ``"rcwa"``, ``"surrogate"`` or ``"swarm"`` (see the module docstring).
    period_nm, thickness_bounds_nm, min_feature_nm : the :class:`DesignSpace`.
    material, substrate, superstrate : material-likes (:mod:`hyplex.optics.materials`).
    harmonics : RCWA orders ``-M..M`` along x and y; 2-3 is fast, >= 5 is accurate.
    grid : pixels of the rendered unit cell.
    surrogate : for ``"surrogate"``: a callable mapping designs ``(..., D)`` in nm
        (shape parameters, then thickness) to ``T (..., L)`` on these wavelengths. If it
        has a ``wavelengths_nm`` attribute, that grid must equal ``wavelengths_nm``.
    budget : :class:`Budget` (default ``Budget()``).
    seed : seeds every random choice; equal seeds give equal results.
    progress : show tqdm bars on stderr.
    device : where to compute (default CUDA when present, else CPU).

    Returns
    -------
    InverseResult, whose ``achieved_T`` is recomputed by the RCWA for the design returned.

    Raises
    ------
    ValueError
        For mismatched or invalid spectra, an unknown family or method, or fabrication
        bounds that leave no feasible design (e.g. a minimum feature above half the period).
    """
    start_time = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    budget = budget if budget is not None else Budget()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    target, wavelengths = _check_target(target_T, wavelengths_nm)
    if not isinstance(harmonics, int) or harmonics < 0:
        raise ValueError(f"harmonics must be an integer >= 0, got {harmonics!r}")
    _check_memory(method, budget, harmonics, grid, wavelengths.numel())
    space = DesignSpace(family, float(period_nm), tuple(thickness_bounds_nm), float(min_feature_nm))
    rcwa = RCWASpectrum(space, wavelengths, material, substrate, superstrate, harmonics, grid)
    target = target.to(device)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # any randomness inside a user's surrogate
    evaluations = 0

    if method == "swarm":

        def objective(unit: torch.Tensor) -> torch.Tensor:
            return _mse(rcwa(space.from_unit(unit)), target)

        swarm = particle_swarm(
            objective,
            space.dimension,
            budget.swarm_size,
            budget.swarm_iterations,
            seed=seed,
            progress=progress,
            device=device,
        )
        best = space.from_unit(swarm.best_position)
        evaluations, history = swarm.evaluations, [math.sqrt(v) for v in swarm.history]
    else:
        if method == "surrogate":
            forward = _check_surrogate(surrogate, wavelengths, space, device)
            screen = space.sample(budget.surrogate_screen, generator, device)
            with torch.no_grad():
                screen_loss = _mse(forward(screen), target)
            starts = _best(space, screen, screen_loss, budget.surrogate_restarts)
            found, found_loss, _ = _adam(
                forward,
                target,
                space,
                starts,
                budget.surrogate_steps,
                budget.learning_rate,
                progress,
                "surrogate Adam",
            )
            candidates = _best(space, found, found_loss, budget.verify)
            with torch.no_grad():
                candidate_loss = _mse(rcwa(candidates), target)
            evaluations += candidates.shape[0]
            history = [math.sqrt(float(candidate_loss.min()))]
        else:
            candidates = space.sample(budget.screen, generator, device)
            with torch.no_grad():
                screen_loss = _mse(rcwa(candidates), target)
            evaluations += candidates.shape[0]
            candidate_loss, history = screen_loss, [math.sqrt(float(screen_loss.min()))]
            if budget.steps > 0:
                starts = _best(space, candidates, screen_loss, budget.restarts)
                candidates, candidate_loss, trace = _adam(
                    rcwa,
                    target,
                    space,
                    starts,
                    budget.steps,
                    budget.learning_rate,
                    progress,
                    "RCWA Adam",
                )
                evaluations += starts.shape[0] * (budget.steps + 1)
                history += trace
        best, best_loss = candidates[candidate_loss.argmin()], float(candidate_loss.min())
        polish = _best(space, candidates, candidate_loss, budget.polish)
        for start in tqdm(polish, desc="L-BFGS polish", disable=not progress, leave=False):
            if math.sqrt(best_loss) < budget.tolerance_rms:
                break
            found, found_loss, trace, count = _lbfgs(
                rcwa, target, space, start, budget.polish_evaluations
            )
            evaluations += count
            history += [min(history[-1], value) for value in trace]
            if found_loss < best_loss:
                best, best_loss = found, found_loss

    with torch.no_grad():
        achieved = rcwa(best.unsqueeze(0))[0]
    evaluations += 1
    shape, thickness = space.split(best)
    shape.check_fits(space.period_nm)
    rms = math.sqrt(float(((achieved - target) ** 2).mean()))
    return InverseResult(
        shape=shape,
        thickness_nm=thickness,
        space=space,
        wavelengths_nm=wavelengths.numpy(),
        target_T=target.cpu().numpy(),
        achieved_T=achieved.cpu().numpy(),
        rms_error=rms,
        wall_s=time.perf_counter() - start_time,
        method=method,
        rcwa_evaluations=evaluations,
        history=history,
        settings={
            "material": str(material),
            "substrate": str(substrate),
            "superstrate": str(superstrate),
            "harmonics": harmonics,
            "grid": list(grid),
            "seed": seed,
        },
    )
