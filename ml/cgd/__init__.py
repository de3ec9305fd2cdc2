"""Combined Global Descriptor (CGD) layers and model builders (Keras 3)."""

from .model import DOMAIN_MODES, build_cgd_head, build_cgd_model, build_descriptor_model
from .pooling import GeM, HorizontalFlip, L2Normalize, MAC, POOLINGS, SPoC, make_pooling

__all__ = [
    "SPoC", "MAC", "GeM", "L2Normalize", "HorizontalFlip", "POOLINGS", "make_pooling",
    "build_cgd_head", "build_cgd_model", "build_descriptor_model", "DOMAIN_MODES",
]
