"""FaceTracker: train your own face detector and run it on a webcam.

The package never imports streamlit; importing it does not import tensorflow either, so the app can
import `streamlit_webrtc` first (importing tensorflow before it segfaults the process).
"""

__version__ = "0.1.0"
