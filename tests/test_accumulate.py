"""Gradient accumulation: K micro-batches make the step of the whole batch, to float
tolerance (the sums run in another order), for every family, dropout included."""

import jax
import numpy as np
import pytest
from conftest import DIGITS, SHAPE
from flax.traverse_util import flatten_dict

from jaxtrain.models.configs import TransformerConfig
from jaxtrain.models.fields import SettingError
from jaxtrain.models.vae import VAEConfig
from jaxtrain.training.engine.run import Run
from jaxtrain.training.settings.config import DataConfig, RunConfig, TrainConfig

STEPS = 3


def image_batches(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"image": rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8),
             "label": rng.integers(0, 10, n).astype(np.int32),
             "index": np.arange(n, dtype=np.int32)} for _ in range(STEPS)]


def text_batches(n, context, vocab, seed=0):
    rng = np.random.default_rng(seed)
    return [{"tokens": rng.integers(0, vocab, (n, context + 1)).astype(np.int32)}
            for _ in range(STEPS)]


VOCAB = "abcdefgh"
CASES = {
    "vae": (lambda: ("vae", VAEConfig(image_shape=SHAPE, encoder_widths=(32,),
                                      decoder_widths=(32,), latent_dim=4),
                     DataConfig()), image_batches),
    # dropout > 0: the masks must be the whole batch's, whatever K
    "digits": (lambda: ("transformer", TransformerConfig(layers=1, d_model=32, heads=2,
                                                         dropout=0.2, **DIGITS),
                        DataConfig()),
               image_batches),
    "text": (lambda: ("transformer", TransformerConfig(
        layers=1, d_model=32, heads=2, dropout=0.2, context=16, vocab_size=len(VOCAB),
        output_size=len(VOCAB)), DataConfig("text", data_file="x.txt", vocab=VOCAB)),
        lambda n: text_batches(n, 16, len(VOCAB))),
}


def train(case, batch_size, accumulate):
    make, batches = CASES[case]
    model, model_config, data = make()
    config = RunConfig(model, model_config, data,
                       TrainConfig(epochs=None, steps=100, batch_size=batch_size,
                                   accumulate=accumulate, warmup_steps=2, lr=3e-3))
    run = Run(config, None)
    state, losses = run.init_state(), []
    for batch in batches(batch_size):
        state, metrics = run.train_step(state, batch)
        losses.append(jax.device_get(metrics))
    return jax.device_get(state), losses


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_accumulated_step_equals_the_whole_batch(case):
    """--batch-size 16 --accumulate 4 trains as --batch-size 16: same metrics every step
    (rtol 1e-5) and the same parameters and EMA after 3 AdamW steps (atol 1e-6)."""
    whole, whole_metrics = train(case, 16, 1)
    split, split_metrics = train(case, 16, 4)
    for a, b in zip(whole_metrics, split_metrics, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6, err_msg=key)
    for tree in ("params", "ema_params"):
        a, b = flatten_dict(getattr(whole, tree), sep="/"), flatten_dict(getattr(split, tree),
                                                                           sep="/")
        assert a.keys() == b.keys()
        for path in a:
            # The attention's key bias adds one constant to a query's scores, which the
            # softmax ignores: its gradient is 0 in exact arithmetic and float noise in
            # practice, and Adam scales any noise up to lr-sized steps.
            if not path.endswith("key/bias"):
                np.testing.assert_allclose(b[path], a[path], rtol=1e-5, atol=1e-6,
                                           err_msg=path)


@pytest.mark.slow
def test_accumulate_must_divide_the_batch():
    with pytest.raises(SettingError, match="--accumulate 3 must divide --batch-size 16"):
        TrainConfig(batch_size=16, accumulate=3)
