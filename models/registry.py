"""The model registry: each model registers itself beside its architecture's config
(models/configs.py), so adding one is its config class, its family module and one
`register(...)` call. Importing this imports no JAX: a family's module (which does) is
named as "module:class" and imported only when a run is built (RunConfig.family).
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Model:
    name: str  # --model's value
    config: type  # its architecture's config dataclass (models/configs.py)
    # task ("images" or "text") -> "module:class" of the models/ family that trains it
    # on that task (models/family.py); a task missing here is one the model cannot do.
    families: dict


_MODELS: dict[str, Model] = {}


def register(model: Model) -> Model:
    if model.name in _MODELS and _MODELS[model.name] != model:
        raise ValueError(f"two models are named {model.name!r}")
    _MODELS[model.name] = model
    return model


def models() -> dict[str, Model]:
    """Every registered model by name (models/configs.py registers the built-in ones)."""
    import jaxtrain.models.configs  # noqa: F401 (registers vae and transformer)

    return dict(_MODELS)
