"""Photos captured and recorded from a camera, and boxes drawn for them by a detector (pre-labels)."""
