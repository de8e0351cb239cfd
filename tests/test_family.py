"""The family contract (models/family.py): every family satisfies it, the optional
members default to "no such feature"."""



import jax
import pytest
from conftest import DIGITS, SHAPE

from jaxtrain.models.charlm import CharLMFamily
from jaxtrain.models.family import Family
from jaxtrain.models.fields import SettingError
from jaxtrain.models.pixel_lm import PixelLMFamily
from jaxtrain.models.registry import models
from jaxtrain.models.transformer import TransformerConfig
from jaxtrain.models.vae import VAEConfig, VAEFamily
from jaxtrain.training.settings.config import DataConfig, RunConfig, TrainConfig
from jaxtrain.training.sources.tokenizer import CharTokenizer


def test_families_satisfy_the_protocol():
    vae = VAEFamily(VAEConfig(image_shape=SHAPE, encoder_widths=(8,), decoder_widths=(8,),
                              latent_dim=2))
    config = TransformerConfig(layers=2, d_model=16, heads=2, **DIGITS)
    digits = PixelLMFamily(config)
    text = CharLMFamily(config.replace(context=12, vocab_size=5, output_size=5,
                                        image_shape=None),
                        CharTokenizer("abcde"))
    for family in (vae, digits, text):
        assert isinstance(family, Family)
        assert {"train_loss", "test_loss"} <= family.units.keys()
    # What each has of the optional members, and the defaults where it has none.
    assert (vae.attention, digits.attention, text.attention) == (None, "blocked", "blocked")
    assert vae.iw_sums is not None and digits.iw_sums is None and text.iw_sums is None
    assert (vae.sample_pixels, digits.sample_pixels, text.sample_pixels) == ("grey", "binary",
                                                                             None)
    assert vae.epoch_text(None, None) is None and text.epoch_images(None, None, None) == {}
    assert vae.tokens_per_example is None and vae.sample_options == ()
    assert vae.no_decay == ("prior_mean", "prior_logvar") and digits.no_decay == ()
    key = jax.random.PRNGKey(0)
    for family in (vae, digits, text):  # each no_decay name is a parameter's
        shapes = jax.eval_shape(lambda f=family: f.init(key, 2))
        paths = {getattr(k, "key", None) for path, _ in
                 jax.tree_util.tree_flatten_with_path(shapes)[0] for k in path}
        assert set(family.no_decay) <= paths


@pytest.mark.parametrize("model,task", [(name, task) for name, m in models().items()
                                        for task in m.families])
def test_every_registered_family_is_a_family_of_its_models_config(model, task):
    """Each (model, task) of the registry names a Family subclass, which a RunConfig of
    that model and task builds."""
    import importlib

    module, name = models()[model].families[task].split(":")
    cls = getattr(importlib.import_module(f"jaxtrain.models.{module}"), name)
    assert issubclass(cls, Family)
    # The smallest config of each: the data's spec or tokenizer sizes it in a real run.
    sized = {("vae", "images"): {"image_shape": SHAPE}, ("transformer", "images"): DIGITS,
             ("transformer", "text"): {"vocab_size": 2, "output_size": 2, "context": 8}}
    data = DataConfig("text", data_file="t.txt", vocab="ab") if task == "text" else DataConfig()
    config = RunConfig(model, models()[model].config(**sized[model, task]), data,
                       TrainConfig(epochs=None, steps=10))
    assert isinstance(config.family(), cls)


def test_a_task_no_model_registers_is_one_message():
    with pytest.raises(SettingError, match="text needs --model transformer, not vae"):
        RunConfig("vae", models()["vae"].config(), DataConfig("text", data_file="t.txt"),
                  TrainConfig(epochs=None, steps=10))
