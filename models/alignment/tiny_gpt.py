"""A tiny decoder-only transformer (GPT) and the synthetic facts it learns, from scratch.

No language-model weights can be downloaded here, so the methods made for language models
(unlearning, preference optimisation, GRPO/EEPO) are exercised on a GPT small enough to train
in seconds on one CPU core, on token sequences whose content is known exactly::

    BOS  entity  relation  value  EOS        "entity e has, for relation r, the value v"

Each ``(entity, relation)`` pair maps to one value drawn at random, so a fact can only be
known by memorising it: the model's accuracy on a fact's value token measures what it holds,
and forgetting a fact is observable token by token (issue 17's "synthetic facts").

Architecture: token + learned position embeddings, ``n_layers`` pre-norm blocks of causal
multi-head self-attention and a GELU MLP (Radford et al. 2019, "Language Models are
Unsupervised Multitask Learners", GPT-2 layout), a final LayerNorm and an untied output
projection. ``TinyGPT(tokens (B, T)) -> logits (B, T, V)``: the ``(B, T, V)`` layout of the
unlearning toolkit (:mod:`hyplex.models.unlearning.toolkit`), targets shifted by one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hyplex.models.unlearning.toolkit import IGNORE_INDEX, Adam

__all__ = [
    "TinyGPTConfig",
    "TinyGPT",
    "FactVocabulary",
    "SyntheticFacts",
    "make_facts",
    "next_token_batch",
    "fact_batches",
    "train_tiny_gpt",
    "fact_accuracy",
    "answer_log_probs",
    "resolve_device",
]


def resolve_device(device=None) -> torch.device:
    """``device`` as a torch device; None picks CUDA when present, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class TinyGPTConfig:
    """Size of a :class:`TinyGPT` (all counts; ``context`` in tokens)."""

    vocab_size: int
    context: int = 8
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    mlp_ratio: int = 4

    def __post_init__(self):
        for name in ("vocab_size", "context", "d_model", "n_heads", "n_layers", "mlp_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TinyGPTConfig.{name} must be an integer >= 1; got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )


class _Block(nn.Module):
    def __init__(self, config: TinyGPTConfig):
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(
            nn.Linear(d, config.mlp_ratio * d), nn.GELU(), nn.Linear(config.mlp_ratio * d, d)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=-1)
        shape = (b, t, self.n_heads, d // self.n_heads)
        q, k, v = (z.reshape(shape).transpose(1, 2) for z in (q, k, v))
        # softmax(q k^T / sqrt(d_head) + causal mask) v  (Vaswani et al. 2017, eq. 1)
        attended = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class TinyGPT(nn.Module):
    """Decoder-only transformer: ``tokens (B, T) int64 -> logits (B, T, vocab_size)``.

    ``T <= config.context``. Position ``t``'s logits predict token ``t + 1``."""

    def __init__(self, config: TinyGPTConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.context, config.d_model)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size)
        for module in self.modules():  # GPT-2 initialisation: N(0, 0.02)
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, 0.0, 0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.is_floating_point():
            raise ValueError(f"tokens must be an integer tensor (B, T); got {tuple(tokens.shape)}")
        if tokens.shape[1] > self.config.context:
            raise ValueError(
                f"sequence length {tokens.shape[1]} exceeds the context {self.config.context}"
            )
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)[None]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


@dataclass(frozen=True)
class FactVocabulary:
    """Token ids of the facts' language: 0 PAD, 1 BOS, 2 EOS, then entities, relations,
    values (each a contiguous block)."""

    n_entities: int
    n_relations: int
    n_values: int

    PAD = 0
    BOS = 1
    EOS = 2

    @property
    def entity_offset(self) -> int:
        return 3

    @property
    def relation_offset(self) -> int:
        return 3 + self.n_entities

    @property
    def value_offset(self) -> int:
        return 3 + self.n_entities + self.n_relations

    @property
    def size(self) -> int:
        return self.value_offset + self.n_values

    def entity(self, e) -> np.ndarray:
        return self.entity_offset + np.asarray(e)

    def relation(self, r) -> np.ndarray:
        return self.relation_offset + np.asarray(r)

    def value(self, v) -> np.ndarray:
        return self.value_offset + np.asarray(v)


@dataclass(frozen=True)
class SyntheticFacts:
    """A set of facts ``(entity, relation) -> value``.

    Attributes
    ----------
    vocabulary : the token layout.
    entities, relations, values : (N,) int arrays, indices within each block.
    tokens : (N, 5) int64, ``BOS entity relation value EOS``.
    """

    vocabulary: FactVocabulary
    entities: np.ndarray
    relations: np.ndarray
    values: np.ndarray
    tokens: np.ndarray

    #: position of the value token in ``tokens``
    VALUE_POSITION = 3

    def __len__(self) -> int:
        return len(self.values)

    def subset(self, indices) -> SyntheticFacts:
        """The facts at ``indices`` (1-D int or bool array)."""
        idx = np.asarray(indices)
        return SyntheticFacts(
            self.vocabulary,
            self.entities[idx],
            self.relations[idx],
            self.values[idx],
            self.tokens[idx],
        )


def make_facts(
    n_entities: int = 60, n_relations: int = 4, n_values: int = 16, seed: int = 0
) -> SyntheticFacts:
    """Every ``(entity, relation)`` pair with a value drawn uniformly (``seed``).

    Returns ``n_entities * n_relations`` facts in a fixed order (entity-major)."""
    for name, value in (("n_entities", n_entities), ("n_relations", n_relations)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")
    if n_values < 2:
        raise ValueError(f"n_values must be >= 2; got {n_values}")
    vocabulary = FactVocabulary(n_entities, n_relations, n_values)
    rng = np.random.default_rng(seed)
    entities, relations = np.divmod(np.arange(n_entities * n_relations), n_relations)
    values = rng.integers(0, n_values, size=entities.shape)
    tokens = np.stack(
        [
            np.full_like(entities, vocabulary.BOS),
            vocabulary.entity(entities),
            vocabulary.relation(relations),
            vocabulary.value(values),
            np.full_like(entities, vocabulary.EOS),
        ],
        axis=1,
    ).astype(np.int64)
    return SyntheticFacts(vocabulary, entities, relations, values, tokens)


def next_token_batch(facts: SyntheticFacts, answer_only: bool = True, device=None):
    """``(inputs (N, 4), targets (N, 4), mask (N, 4))`` for next-token prediction.

    ``targets`` are the inputs shifted by one; ``mask`` is True at the value token only when
    ``answer_only`` (the fact itself), else everywhere except the entity the model cannot
    predict. This is the unlearning toolkit's ``(inputs, targets, mask)`` batch.
    """
    tokens = torch.as_tensor(facts.tokens, device=resolve_device(device))
    inputs, targets = tokens[:, :-1], tokens[:, 1:].clone()
    mask = torch.zeros_like(targets, dtype=torch.bool)
    if answer_only:
        mask[:, SyntheticFacts.VALUE_POSITION - 1] = True
    else:
        mask[:, 1:] = True  # the entity (position 0's target) is unpredictable
    return inputs, targets, mask


def fact_batches(facts: SyntheticFacts, batch_size: int = 64, device=None) -> list[tuple]:
    """The facts as a list of ``(inputs, targets, mask)`` answer-token batches (fixed order)."""
    inputs, targets, mask = next_token_batch(facts, True, device)
    return [
        (inputs[i : i + batch_size], targets[i : i + batch_size], mask[i : i + batch_size])
        for i in range(0, len(facts), batch_size)
    ]


def train_tiny_gpt(
    facts: SyntheticFacts,
    config: TinyGPTConfig | None = None,
    steps: int = 600,
    lr: float = 3e-3,
    batch_size: int = 128,
    seed: int = 0,
    device=None,
    progress: bool = False,
) -> TinyGPT:
    """Train a :class:`TinyGPT` from scratch on ``facts`` (next-token loss on every
    predictable token; Adam; full-batch when ``batch_size >= len(facts)``).

    Parameters
    ----------
    facts : the training facts.
    config : model size (default: :class:`TinyGPTConfig` for the facts' vocabulary).
    steps : Adam steps. lr : learning rate. batch_size : facts per step.
    seed : initialisation and batch order (torch's global RNG is restored afterwards).
    device : None = CUDA when present.

    Returns
    -------
    TinyGPT in eval mode.
    """
    if len(facts) == 0:
        raise ValueError("facts is empty")
    device = resolve_device(device)
    config = config or TinyGPTConfig(vocab_size=facts.vocabulary.size)
    if config.vocab_size < facts.vocabulary.size:
        raise ValueError(
            f"config.vocab_size {config.vocab_size} < the facts' vocabulary {facts.vocabulary.size}"
        )
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = TinyGPT(config).to(device)
    finally:
        torch.random.set_rng_state(state)
    inputs, targets, mask = next_token_batch(facts, answer_only=False, device=device)
    targets = torch.where(mask, targets, torch.full_like(targets, IGNORE_INDEX))
    optimizer = Adam(model.parameters(), lr)
    rng = np.random.default_rng(seed)
    from tqdm.auto import tqdm

    model.train()
    for _ in tqdm(range(steps), desc="train tiny GPT", disable=not progress, leave=False):
        if batch_size >= len(facts):
            rows = slice(None)
        else:
            rows = torch.as_tensor(rng.choice(len(facts), batch_size, replace=False), device=device)
        logits = model(inputs[rows])
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            targets[rows].reshape(-1),
            ignore_index=IGNORE_INDEX,
        )
        optimizer.step(loss)
    return model.eval()


@torch.no_grad()
def answer_log_probs(model: nn.Module, facts: SyntheticFacts) -> torch.Tensor:
    """``log p(value | BOS entity relation)`` for each fact: ``(N,)`` float (nats)."""
    device = next(model.parameters()).device
    inputs, targets, _ = next_token_batch(facts, True, device)
    position = SyntheticFacts.VALUE_POSITION - 1
    logits = model(inputs[:, : position + 1])[:, position]
    return torch.log_softmax(logits.float(), -1).gather(1, targets[:, position, None])[:, 0]


@torch.no_grad()
def fact_accuracy(model: nn.Module, facts: SyntheticFacts) -> float:
    """Share of facts whose value token is the model's top-1 prediction (0..1)."""
    if len(facts) == 0:
        return math.nan
    device = next(model.parameters()).device
    inputs, targets, _ = next_token_batch(facts, True, device)
    position = SyntheticFacts.VALUE_POSITION - 1
    predicted = model(inputs[:, : position + 1])[:, position].argmax(-1)
    return float((predicted == targets[:, position]).float().mean())
