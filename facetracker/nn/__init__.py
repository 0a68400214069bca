"""The networks and their training: the only wing that imports TensorFlow and Keras at module level.

Every other wing runs exported models (TFLite, ONNX) or OpenCV's YuNet, so the web server and the
light commands never pay for TensorFlow. TensorFlow's environment is set here, once, before any
module of this wing imports it.
"""

import os

# oneDNN's CPU kernels (fused batch norm, convolution gradients) train the MobileNet backbones about
# twice as fast here; TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI or AMX.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
