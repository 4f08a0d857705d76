"""anthology: virtual personas for language models via an anthology of backstories
(Moon et al., EMNLP 2024).

The Python API::

    from anthology import load_model, GenerateRequest, ScoreRequest, ResponseCache, CachedModel

    model = CachedModel(load_model("smollm2-135m"), ResponseCache("responses.sqlite"))
    model.score([ScoreRequest("Question: ...\\nAnswer:", (" A", " B"))])
"""

from anthology.errors import AnthologyError
from anthology.models.base import (
    Capabilities,
    GenerateRequest,
    GenerateResult,
    LanguageModel,
    Sample,
    ScoreRequest,
    ScoreResult,
)
from anthology.models.cached_model import CachedModel
from anthology.models.registry import load_model
from anthology.models.response_cache import ResponseCache

__version__ = "0.1.0"

__all__ = [
    "AnthologyError",
    "CachedModel",
    "Capabilities",
    "GenerateRequest",
    "GenerateResult",
    "LanguageModel",
    "ResponseCache",
    "Sample",
    "ScoreRequest",
    "ScoreResult",
    "__version__",
    "load_model",
]
