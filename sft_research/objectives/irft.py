"""Implicit-reward inverse-RL fine-tuning (IRFT) on demonstrations only.

Li et al. (2024), "Getting More Juice Out of the SFT Data: Reward Learning from Human Demonstration Improves SFT for
LLM Alignment", NeurIPS 2024, arXiv 2405.17888, Algorithm 2; official code ``JasonJiaxiangLi/Reward_learning_SFT``,
``src/alignment/trainer.py`` (``spin_loss``).

Each round t generates y ~ pi_t(.|x) for every demonstration prompt with the model at the start of the round, then
trains on pairs (demonstration, generation) with pi_t as the frozen reference. The rounds are run by
:mod:`sft_research.pipelines.irft`; this file holds the per-round loss.
"""

from __future__ import annotations

from sft_research.objectives.dpo import DPO


class IRFT(DPO):
    """The IRFT round loss on (demonstration, generation) pairs, per pair::

        L_t = -log sigma(beta [(log pi_theta - log pi_t)(y_demo) - (log pi_theta - log pi_t)(y_gen)])

    with log-probs summed over response tokens: the DPO logistic loss (:func:`~sft_research.objectives.dpo.dpo_losses`,
    ``sigmoid``) with the demonstration as the preferred and the round-start model's own generation as the
    dispreferred response, and pi_t (the round-start model) as the reference, so it shares DPO's code.

    Args:
        beta: the KL strength of the implicit reward (official: 0.1).
    """

    def __init__(self, beta: float = 0.1):
        super().__init__(beta, "sigmoid", 0.0)
