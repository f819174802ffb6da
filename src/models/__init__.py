"""DropCov networks: model registry, ResNet backbones, the DropCov/GAP heads and the GCP maths."""
from ._registry import create_model, create_model_from_config, list_models, model_options, register_model
from .dropcov_head import DropCovHead, GlobalAvgPoolHead
from .resnet import ResNet

__all__ = ["DropCovHead", "GlobalAvgPoolHead", "ResNet", "create_model", "create_model_from_config", "list_models",
           "model_options", "register_model"]
