"""ImageNet-pretrained backbones in Keras (EfficientNet-Lite), with weights ported from PyTorch files."""
import os

# TensorFlow leaves its oneDNN kernels off on CPUs without AVX-512 (e.g. the AMD EPYC machines we run on); with
# them on, the backbone needs about half the CPU time per image. The switch works only if it is set before
# TensorFlow is first imported, which every module of this package does. TF_ENABLE_ONEDNN_OPTS=0 opts out.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
