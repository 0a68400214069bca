"""Running a model: runtimes (TFLite, ONNX, OpenCV's YuNet), the detector, tracking, the live frame path and video files. No TensorFlow at import."""
