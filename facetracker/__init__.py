"""FaceTracker: train your own face detector and run it on a webcam.

The package is arranged in wings by job (see docs/architecture.md):
`config` (settings and presets), `io` (safe files), `data` (datasets, augmentation),
`labelling` (capture, recording, pre-labels, photo edits), `inference` (runtimes, the detector, tracking, video),
`evaluation` (metrics, verdict, bench), `nn` (networks and training: the only wing that imports
TensorFlow), `runs` (run folders, launching runs, the data root), the leaf `boxes` (box geometry)
and `cli` (one lazy import per command).

The package never imports streamlit, and importing it does not import TensorFlow.
"""

__version__ = "0.1.0"
