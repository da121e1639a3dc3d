"""hyplex.models.memory: memories that keep uncertainty (issue 17).

``belief_memory``: Belief Memory: Agent Memory Under Partial Observability (BeliefMem),
candidate conclusions with Noisy-OR probabilities; per-object material hypotheses over
video frames and sessions.
"""
