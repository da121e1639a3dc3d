"""The person at the bench: the steps of a calibration that need hands, as a callback.

The runner (:func:`hyplex.calibration.pipeline.calibrate`) cannot cover a lens or place a
white tile. Before each such step it calls ``operator.prompt(step, instruction)`` and goes
on when the call returns. Three operators answer it:

- the command line's interactive operator (``hyplex calibrate``): prints the instruction and
  waits for Enter;
- :class:`ScriptedOperator` (``hyplex calibrate --yes``): logs the instruction and goes on,
  for a bench whose state is already right (or automated);
- the simulated bench (``calibration.sim_bench_config``): changes what the simulated camera
  looks at, as the person would.

Steps (``step`` is one of :data:`STEPS`; the runner calls only those it will run):

=================  ==========================================================================
``darks``          cover the lens: no light may reach the sensor (master darks)
``white``          place the white reference filling the field of view (flat, registration)
``monochromator``  point the camera at the monochromator's sphere port (EMVA 1288, sweep)
``sample``         place broadband sample ``index`` (0-based) of the sample set (basis fit)
=================  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

STEPS = ("darks", "white", "monochromator", "sample")

INSTRUCTIONS = {
    "darks": "Cover the lens (cap on, room light off): no light may reach the sensor.",
    "white": "Place the white reference (diffuser or sphere port under broadband light) so it "
    "fills the whole field of view, in focus of nothing, evenly lit.",
    "monochromator": "Point the camera at the monochromator's integrating-sphere port (remove "
    "the white reference and the lens cap); the reference power meter head sits in the "
    "sphere's second port.",
    "sample": "Place broadband sample {number} of {total} in front of the camera.",
}


@runtime_checkable
class Operator(Protocol):
    """Answers the steps that need a person (see the module doc)."""

    def prompt(self, step: str, instruction: str, index: int | None = None) -> None:
        """Bring the bench into state ``step`` (one of :data:`STEPS`); return when done.

        Parameters
        ----------
        step : str
            Which state the next measurement needs.
        instruction : str
            The same in words, for a person.
        index : int, optional
            The sample (0-based) for ``step == "sample"``.
        """
        ...


def check_step(step: str) -> None:
    """ValueError unless ``step`` is one of :data:`STEPS`."""
    if step not in STEPS:
        raise ValueError(f"unknown operator step {step!r}; expected one of {STEPS}")


@dataclass
class ScriptedOperator:
    """Goes on at once (``--yes``); records what it was asked in ``log`` and passes each
    instruction to ``echo`` (default: nothing)."""

    echo: object = None
    log: list[tuple[str, int | None]] = field(default_factory=list)

    def prompt(self, step: str, instruction: str, index: int | None = None) -> None:
        check_step(step)
        self.log.append((step, index))
        if callable(self.echo):
            self.echo(f"[{step}] {instruction}")
