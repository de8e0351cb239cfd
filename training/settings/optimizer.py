"""The optimizer's settings as one section: what training/engine/optimizer.py builds the
optax chain and the LR schedule from. TrainConfig (training/settings/config.py) extends
it, so they stay `[train]` keys and flags of their own, in saved runs as well.
"""

import dataclasses

from jaxtrain.models.fields import setting, validate

DECAY_MASKS = ("kernels", "all")  # see OptimizerConfig.weight_decay_mask


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    lr: float = setting(2e-3, "Peak learning rate of AdamW.", gt=0)
    warmup_steps: int | None = setting(
        None, "Linear warmup steps from lr/100 before cosine decay (a family's default: "
        "at most a tenth of the run).", ge=0,
        shown="a tenth of the run's steps")
    weight_decay: float = setting(1e-4, "AdamW decoupled weight decay.", ge=0)
    weight_decay_mask: str = setting(
        "kernels", "What --weight-decay shrinks: kernels (weight matrices and embeddings, "
        "not biases, LayerNorm scales or the VAE's class prior) or all (every parameter, "
        "as runs saved before 2026-12-02 did).", choices=DECAY_MASKS)
    grad_clip: float = setting(1.0, "Clip gradients to this global norm.", gt=0)

    # The values of settings added since a run may have been saved that it was trained
    # with: a saved config lacking the field gets this, not the default, so the run
    # resumes as it was (models/configs.py:saved_fields).
    LEGACY = {"weight_decay_mask": "all"}

    def __post_init__(self):
        validate(self)
