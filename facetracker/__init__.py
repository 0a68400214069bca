"""FaceTracker: train your own face detector and run it on a webcam.

The package never imports streamlit; importing it does not import tensorflow either, so the app can
import `streamlit_webrtc` first (importing tensorflow before it segfaults the process).
"""

import os

# oneDNN's CPU kernels (fused batch norm, convolution gradients) train the MobileNet backbones about
# twice as fast here; TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI or AMX.
# TensorFlow reads this when it is imported, which no facetracker module does before this line.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
