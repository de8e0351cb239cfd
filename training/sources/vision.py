"""torchvision, imported without the 1.4 s it spends importing torch._dynamo.

torchvision 0.29's `ops/roi_align.py` imports `torch._dynamo.utils` at module level for
one function (`is_compile_supported`) that only roi_align's calls use, although the same
file defers `torch.compile` on purpose "to avoid eagerly importing dynamo". `import
torchvision` imports its ops, so every image command paid for TorchDynamo: 1.6 s of
a warm 20-step VAE fit's 7.5 s here, against 0.2 s without. While torchvision imports,
`torch._dynamo.utils` is a stand-in whose `is_compile_supported` imports the real one
when called; the stand-in leaves sys.modules afterwards, so anything that imports
TorchDynamo later gets the real module (tests/test_data.py checks both).
"""

import sys
import types


def _is_compile_supported(*args, **kwargs):
    from torch._dynamo.utils import is_compile_supported

    return is_compile_supported(*args, **kwargs)


def import_torchvision() -> types.ModuleType:
    """`import torchvision`, without importing torch._dynamo."""
    import torch  # noqa: F401  (first: the stand-in must not shadow torch's own imports)

    if "torchvision" in sys.modules or "torch._dynamo.utils" in sys.modules:
        import torchvision

        return torchvision
    stand_in = types.ModuleType("torch._dynamo.utils")
    stand_in.is_compile_supported = _is_compile_supported
    sys.modules["torch._dynamo.utils"] = stand_in
    try:
        import torchvision
    finally:
        if sys.modules.get("torch._dynamo.utils") is stand_in:
            del sys.modules["torch._dynamo.utils"]
    return torchvision
