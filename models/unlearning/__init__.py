"""hyplex.models.unlearning: forgetting on request (issue 17).

One interface over any model that outputs logits, for pixels (segmenters), points and tokens
(a language model)::

    from hyplex.models.unlearning import unlearn
    forgotten = unlearn(model, forget, retain, method="WGA", steps=200, lr=1e-3)

See :mod:`.toolkit` for the batch layouts and the method contract. Evaluation is separate
(:mod:`.evaluation`: forget accuracy, mIoU, output KL, membership inference, extraction
strength, calibration by model mixing) and shared by every method.

==========================  =========  =======================================================
module                      names      paper
==========================  =========  =======================================================
gradient_effect             GA, GD,    Rethinking LLM Unlearning Objectives: A Gradient
                            NPO, WGA,  Perspective and Go Beyond (ICLR 2025); G-effect
                            TNPO,
                            WTNPO
gradient_rectification      GRU        GRU: Mitigating the Trade-off between Unlearning and
                                       Retention for LLMs (ICML 2025)
saturation_importance       SatImp     Exploring Criteria of Loss Reweighting to Enhance LLM
                                       Unlearning (ICML 2025)
memorize_to_forget          MOX        Is Gradient Ascent Really Necessary? Memorize to Forget
                                       for Machine Unlearning (2026)
distinguishable_deletion    EUA        Distinguishable Deletion: Unifying Knowledge Erasure and
                                       Refusal for LLM Unlearning (2026)
belief_targets              BS         LLM Unlearning with LLM Beliefs (2025)
evaluation                  (shared)   Towards Effective Evaluations and Comparisons for LLM
                                       Unlearning Methods (ICLR 2025): ES, MIA, model mixing
federated                   FedAvg,    Graph Federated Unlearning for Privacy Preservation
                            removal    (2026): projected ascent + recovery
concept_erasure             AEGIS      AEGIS: Adversarial Target-Guided Retention-Data-Free
                                       Robust Concept Erasure from Diffusion Models (ICLR 2026)
segmenter_forgetting        —          class / scene requests on twin scenes, the retrain
==========================  =========  =======================================================
"""

from hyplex.models.unlearning.toolkit import (
    METHODS,
    Batch,
    Objective,
    UnlearningMethod,
    build_method,
    method_class,
    unlearn,
)

__all__ = [
    "METHODS",
    "Batch",
    "Objective",
    "UnlearningMethod",
    "build_method",
    "method_class",
    "unlearn",
]
