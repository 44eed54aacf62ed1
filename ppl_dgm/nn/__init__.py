"""Networks shared by every model family: MLPs, conv encoders/decoders, the U-Net, time/class embeddings."""

from ppl_dgm.nn.blocks import (
    AdaptiveInstanceNorm,
    AttentionBlock,
    Downsample,
    EqualizedConv2d,
    EqualizedLinear,
    ModulatedConv2d,
    NoiseInjection,
    ResidualBlock,
    Upsample,
    adaptive_instance_norm,
)
from ppl_dgm.nn.conv import ConvDecoder, ConvEncoder, ConvFeatureDecoder, ConvFeatureEncoder
from ppl_dgm.nn.embeddings import ClassEmbedding, SinusoidalTimeEmbedding, sinusoidal_embedding
from ppl_dgm.nn.functional import expand_like, per_sample_time
from ppl_dgm.nn.mlp import MLP, FourierFeatures, TimeConditionedMLP
from ppl_dgm.nn.unet import UNet

__all__ = [
    "AdaptiveInstanceNorm",
    "AttentionBlock",
    "EqualizedConv2d",
    "EqualizedLinear",
    "ModulatedConv2d",
    "NoiseInjection",
    "adaptive_instance_norm",
    "ClassEmbedding",
    "ConvDecoder",
    "ConvEncoder",
    "ConvFeatureDecoder",
    "ConvFeatureEncoder",
    "Downsample",
    "FourierFeatures",
    "MLP",
    "ResidualBlock",
    "SinusoidalTimeEmbedding",
    "TimeConditionedMLP",
    "UNet",
    "Upsample",
    "expand_like",
    "per_sample_time",
    "sinusoidal_embedding",
]
