"""The networks the scripts build, train and reload: the registry (`MODELS`), `build_model`, a fresh
copy of a model, parameter counts and the ImageNet-weights check. The card's models module: what the
scripts share, re-exported from the library (`safehil.training.models`, where each network is
registered)."""
from safehil.training.models import MODELS, build_model, count_parameters, ensure_imagenet_weights, fresh_model

__all__ = ["MODELS", "build_model", "count_parameters", "ensure_imagenet_weights", "fresh_model"]
