"""Logic rules read from a fully connected head, with their fidelity to the network.

Papers: J. Zhao, Q. Wang et al., "A game method for improving the interpretability of
convolution neural network" (arXiv 1910.09090, 2019), and "How far from automatically
interpreting deep learning" (same group). The first builds a *logical network* from the
fully connected layers, extracting the logical relation between their inputs and outputs,
and alternates ("plays a game") between perceptual learning (the network) and logical
learning (the rules). Only the abstracts could be read here; the extraction below follows
the classic decompositional search for a layer's sufficient conditions (the KT algorithm of
L.-M. Fu, "Rule generation from neural networks", IEEE TSMC 1994; Towell & Shavlik 1993):

* Inputs of the head are binarised literals (a barcode channel above its threshold, a
  feature unit active). For one unit ``a = w . x + b`` with ``x in {0, 1}^D``, a conjunction
  ``C`` of literals is a rule "C => unit on" when the worst case over the free inputs is
  still positive::

      b + sum_{i: x_i=1 in C} w_i + sum_{i free} min(w_i, 0) > 0

  and "C => unit off" when the best case is still <= 0 (``max(w_i, 0)`` for free inputs).
  Rules are enumerated up to ``max_literals`` and only minimal ones kept.
* A two-layer head ``x -> hidden -> output`` is read layer by layer and the rules are
  composed: each hidden literal of an output rule is replaced by one of that hidden unit's
  on/off rules (a disjunction), conjunctions that contradict themselves are dropped.
* For heads whose hidden activations are far from binary (a trained ReLU head), the
  decompositional reading loses rules; :func:`extract_rules_exhaustive` reads the head's
  whole truth table over ``D <= 16`` binary inputs instead and keeps the minimal
  conjunctions (at most ``max_literals``) under which the head always says class 1, i.e. the
  prime implicants of bounded size of the head's logical function (Quine-McCluskey style).
* :func:`rule_fidelity` is the share of inputs on which the rule set decides as the network.

* :func:`rule_game` plays the game method's alternation in its simplest form: each round
  reads the rules of the head (logical abstraction), then trains the head on the labels and,
  with weight ``logic_weight``, on the rules' decisions (perceptual learning pulled towards
  the logic), so that the rules explain more of the head (fidelity) at little accuracy cost.

Not reproduced: the papers' own game formulation (only abstracts were readable; the
alternation above is this module's reading of it) and their CNN benchmarks.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = [
    "Rule",
    "unit_rules",
    "extract_head_rules",
    "extract_rules_exhaustive",
    "head_decision",
    "rules_predict",
    "rule_fidelity",
    "rule_game",
]


@dataclass(frozen=True)
class Rule:
    """``literals`` (frozenset of ``(input index, required 0/1 value)``) imply ``conclusion``
    (True: the unit/class is on)."""

    literals: frozenset
    conclusion: bool = True

    def holds(self, x: np.ndarray) -> np.ndarray:
        """Whether the premise holds for binary inputs ``x`` (N, D) -> (N,) bool."""
        out = np.ones(x.shape[0], bool)
        for index, value in self.literals:
            out &= x[:, index] == value
        return out

    def describe(self, names=None) -> str:
        parts = [
            (names[i] if names else f"x{i}") + ("" if v else "=0") for i, v in sorted(self.literals)
        ]
        return (" AND ".join(parts) or "TRUE") + (" => on" if self.conclusion else " => off")


def unit_rules(weights, bias: float, max_literals: int = 3, on: bool = True) -> list[Rule]:
    """Minimal conjunctions of at most ``max_literals`` binary literals that force one linear
    unit ``w . x + b`` (D,) on (``> 0``) or, with ``on=False``, off (``<= 0``)."""
    w = np.asarray(weights, dtype=float)
    if w.ndim != 1 or not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be a finite (D,) vector; got shape {w.shape}")
    if max_literals < 0:
        raise ValueError(f"max_literals must be >= 0; got {max_literals}")
    free_worst = np.minimum(w, 0) if on else np.maximum(w, 0)
    found: list[frozenset] = []
    for size in range(0, min(max_literals, len(w)) + 1):
        for indices in itertools.combinations(range(len(w)), size):
            for values in itertools.product((1, 0), repeat=size):
                literals = frozenset(zip(indices, values, strict=True))
                if any(r <= literals for r in found):
                    continue  # not minimal
                bound = float(bias) + free_worst.sum()
                for i, v in literals:
                    bound += (w[i] if v else 0.0) - free_worst[i]
                if (bound > 0) if on else (bound <= 0):
                    found.append(literals)
    return [Rule(r, on) for r in found]


def _linear_layers(head: nn.Module) -> list[nn.Linear]:
    layers = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not 1 <= len(layers) <= 2 or layers[-1].out_features not in (1, 2):
        raise ValueError(
            "head must hold one or two nn.Linear layers ending in 1 output (logit) or 2 "
            f"(two-class logits); got {[tuple(m.weight.shape) for m in layers]}"
        )
    return layers


def _output_unit(layer: nn.Linear) -> tuple[np.ndarray, float]:
    w = layer.weight.detach().double().cpu().numpy()
    b = layer.bias.detach().double().cpu().numpy() if layer.bias is not None else np.zeros(len(w))
    if w.shape[0] == 2:  # two logits: class 1 wins when (w1 - w0) . x + (b1 - b0) > 0
        return w[1] - w[0], float(b[1] - b[0])
    return w[0], float(b[0])


def extract_head_rules(head: nn.Module, max_literals: int = 3) -> list[Rule]:
    """Rules over the head's binary inputs for "class 1 (e.g. fake)".

    ``head``: ``nn.Linear`` or ``Linear -> ReLU/step-like -> Linear`` with 1 or 2 outputs;
    hidden units count as on when their pre-activation is > 0 (ReLU/sigmoid at 0.5).
    Returns minimal rules (conclusion True), each at most ``max_literals`` input literals.
    """
    layers = _linear_layers(head)
    out_w, out_b = _output_unit(layers[-1])
    if len(layers) == 1:
        return unit_rules(out_w, out_b, max_literals)
    hidden = layers[0]
    h_w = hidden.weight.detach().double().cpu().numpy()
    h_b = hidden.bias.detach().double().cpu().numpy()
    # output rules over hidden literals; a ReLU unit that is on passes a positive value, so
    # read it as 1 (its largest weight contribution is bounded by the sign, as KT does)
    output = unit_rules(out_w, out_b, max_literals)
    on = [unit_rules(h_w[j], h_b[j], max_literals, True) for j in range(len(h_w))]
    off = [unit_rules(h_w[j], h_b[j], max_literals, False) for j in range(len(h_w))]
    composed: list[frozenset] = []
    for rule in output:
        options = [on[j] if v else off[j] for j, v in sorted(rule.literals)]
        for choice in itertools.product(*options):
            literals = frozenset().union(*(r.literals for r in choice))
            indices = [i for i, _ in literals]
            if len(indices) != len(set(indices)) or len(literals) > max_literals:
                continue  # contradictory or too long
            if not any(c <= literals for c in composed):
                composed = [c for c in composed if not literals <= c] + [literals]
    return [Rule(c, True) for c in composed]


def head_decision(head: nn.Module, x: np.ndarray) -> np.ndarray:
    """The head's class-1 decision on binary inputs ``x`` (N, D) -> (N,) bool (one logit
    > 0, or logit 1 > logit 0)."""
    with torch.no_grad():
        logits = head(torch.as_tensor(np.asarray(x), dtype=torch.float32))
    decision = (logits[:, 1] > logits[:, 0]) if logits.shape[1] == 2 else (logits[:, 0] > 0)
    return decision.cpu().numpy()


def extract_rules_exhaustive(head: nn.Module, n_inputs: int, max_literals: int = 3) -> list[Rule]:
    """Minimal conjunctions of at most ``max_literals`` literals under which ``head`` decides
    class 1 for *every* completion of the other inputs (its whole truth table over
    ``n_inputs`` <= 16 binary inputs is evaluated once)."""
    if not 1 <= n_inputs <= 16:
        raise ValueError(f"n_inputs must lie in [1, 16] (2**n_inputs evaluations); got {n_inputs}")
    table = np.array(list(itertools.product((0, 1), repeat=n_inputs)), dtype=np.int8)
    positive = head_decision(head, table)
    found: list[frozenset] = []
    for size in range(0, min(max_literals, n_inputs) + 1):
        for indices in itertools.combinations(range(n_inputs), size):
            for values in itertools.product((1, 0), repeat=size):
                literals = frozenset(zip(indices, values, strict=True))
                if any(r <= literals for r in found):
                    continue
                covered = np.ones(len(table), bool)
                for i, v in literals:
                    covered &= table[:, i] == v
                if covered.any() and positive[covered].all():
                    found.append(literals)
    return [Rule(r, True) for r in found]


def rules_predict(rules: list[Rule], x: np.ndarray) -> np.ndarray:
    """1 where any rule fires, else 0: binary (N, D) -> (N,) int."""
    x = np.asarray(x)
    fired = np.zeros(x.shape[0], bool)
    for rule in rules:
        fired |= rule.holds(x)
    return fired.astype(int)


def rule_fidelity(rules: list[Rule], head: nn.Module, x: np.ndarray) -> float:
    """Share of binary inputs ``x`` (N, D) on which the rules decide as the head does."""
    return float(np.mean(rules_predict(rules, x) == head_decision(head, x).astype(int)))


def rule_game(
    head: nn.Module,
    x,
    y,
    rounds: int = 3,
    max_literals: int = 3,
    logic_weight: float = 1.0,
    steps: int = 100,
    lr: float = 1e-2,
) -> list[dict]:
    """Alternate rule reading and rule-guided training of ``head`` (in place).

    Parameters
    ----------
    head : binary inputs (N, D) float -> logits (N, 2).
    x : (N, D) binary training inputs. y : (N,) labels in {0, 1}.
    rounds : rule reading + training rounds. steps, lr : Adam steps and rate per round.
    logic_weight : weight of the cross-entropy towards the rules' decisions (>= 0).

    Returns
    -------
    One dict per round and a last one after training: ``round``, ``n_rules``, ``fidelity``
    (rules vs head on ``x``), ``head_accuracy`` and ``rule_accuracy`` on ``x``.
    """
    from hyplex.models.unlearning.toolkit import Adam

    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y).astype(np.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"x must be (N, D) and y (N,); got {x.shape} and {y.shape}")
    if logic_weight < 0:
        raise ValueError(f"logic_weight must be >= 0; got {logic_weight}")
    inputs, targets = torch.as_tensor(x), torch.as_tensor(y)
    optimizer = Adam([p for p in head.parameters() if p.requires_grad], lr)
    history = []
    for round_index in range(rounds + 1):
        rules = extract_rules_exhaustive(head, x.shape[1], max_literals)
        logic = rules_predict(rules, x)
        history.append(
            {
                "round": round_index,
                "n_rules": len(rules),
                "fidelity": rule_fidelity(rules, head, x),
                "head_accuracy": float(np.mean(head_decision(head, x).astype(int) == y)),
                "rule_accuracy": float(np.mean(logic == y)),
            }
        )
        if round_index == rounds:
            break
        logic_targets = torch.as_tensor(logic, dtype=torch.int64)
        for _ in range(steps):
            logits = head(inputs)
            loss = nn.functional.cross_entropy(logits, targets)
            loss = loss + logic_weight * nn.functional.cross_entropy(logits, logic_targets)
            optimizer.step(loss)
    return history
