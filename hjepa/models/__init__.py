"""Models: the ViT encoder (timm blocks, real LayerScale), the hierarchical predictor, H-JEPA."""

from hjepa.models.encoder import (
    Encoder,
    EncoderOutput,
    build_encoder,
    encoder_arch,
    load_encoder,
    save_encoder,
)
from hjepa.models.hjepa import HJEPA, JEPAOutput
from hjepa.models.predictor import Predictor

__all__ = [
    "HJEPA",
    "Encoder",
    "EncoderOutput",
    "JEPAOutput",
    "Predictor",
    "build_encoder",
    "encoder_arch",
    "load_encoder",
    "save_encoder",
]
