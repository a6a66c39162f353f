"""susl: semi-unsupervised learning with deep generative models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["SemiUnsupervised", "__version__"]

if TYPE_CHECKING:
    from susl_cli.api import SemiUnsupervised


def __getattr__(name: str) -> Any:
    # The estimator imports torch and scikit-learn: load it on first use, so that
    # `import susl_cli` (every CLI start) stays cheap.
    if name == "SemiUnsupervised":
        from susl_cli.api import SemiUnsupervised

        return SemiUnsupervised
    raise AttributeError(f"module 'susl_cli' has no attribute {name!r}")
