"""What the engine asks of a data source, written down, and the source of a run's config.

Two sources keep the contract: images (training/sources/images.py: any registered image
dataset, training/sources/registry.py) and text (training/sources/text.py: windows of a tokenized
file or folder). Batches are dicts of numpy arrays, addressed by global step so that a
resumed run reads exactly the batches of the uninterrupted one.
"""

from typing import Any, Iterator, Protocol, runtime_checkable

from jaxtrain.training.sources.text import TextSource


@runtime_checkable
class Source(Protocol):
    # Steps in one pass over the training data; None where steps are the unit (text).
    steps_per_epoch: int | None
    # Images: what they are (models/spec.py: shape, classes, levels); None for text.
    spec: Any

    def train_batches(self, start_step: int) -> Iterator[dict]:
        """The batches of steps start_step, start_step + 1, ... (endless)."""

    def eval_batches(self, batch_size: int | None = None) -> Iterator[dict]:
        """Every test example (or validation window) once, in batches of `batch_size`
        (default: the run's batch size) padded to full with "mask" 0 (the families sum
        over mask 1)."""

    @property
    def eval_examples(self) -> int:
        """Test examples (or validation windows) that eval_batches yields."""

    def preview(self) -> Any:
        """What a family's epoch_images shows beside its samples (test images and their
        labels), or None."""


def import_data_modules(config) -> None:
    """Imports what reading the run's data needs: torch and torchvision for images (about
    4 s on 2 CPU cores), nothing more for text. A command calls it first to time the
    imports apart from reading the data."""
    if not config.data.is_text:
        import jaxtrain.training.sources.images  # noqa: F401


def open_source(config, train: bool = True) -> Source:
    """The data of a run (its RunConfig): images by epoch, or text windows by step.
    Without `train`, a text run validated by a --val-file reads only that (an evaluation)."""
    if config.data.is_text:
        alone = not train and config.data.val_file is not None
        return TextSource(None if alone else config.data.data_file,
                          config.data.text_tokenizer(),
                          config.model_config.context, config.train.batch_size,
                          config.train.seed, config.data.val_file, config.data.eval_windows)
    # torch and torchvision (about 4 s to import) are needed only to read images, so
    # sampling and text runs do without them.
    from jaxtrain.training.sources.images import ImageSource

    return ImageSource(config.data, config.train.batch_size, config.train.seed)
