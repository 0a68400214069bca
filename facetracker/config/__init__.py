"""What a run is asked to do and the names the app offers: settings, presets, their ranges. No TensorFlow."""
