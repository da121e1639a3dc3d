"""hyplex.models.alignment: a tiny GPT trained from scratch and the alignment methods of
issue 17 run on it (no weights can be downloaded).

==========================  ==============================================================
module                      paper / concept
==========================  ==============================================================
tiny_gpt                    a decoder-only transformer and synthetic facts it memorises
preference_objectives       DPO (Rafailov et al. 2023) and PPO's clipped surrogate (Schulman
                            et al. 2017), split into positive/negative learning and reweighting
preference_dynamics         What Is Preference Optimization Doing, How and Why? (DPO vs PPO
                            gradient-alignment diagnostics)
preference_valuation        Towards Understanding Valuable Preference Data for LLM Alignment
                            (truncated influence, LossDiff, IRM; selecting pairs)
exploration_unlearning      EEPO: Exploration-Enhanced Policy Optimization via
                            Sample-Then-Forget (GRPO with a forget step between two halves)
benchmark_blocks            the tiny-GPT and alignment blocks of benchmarks/unlearning.py
==========================  ==============================================================
"""
