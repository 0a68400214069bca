"""Photos captured and recorded from a camera, boxes drawn for them by a detector (pre-labels), and
changes to a photo (delete, no face, a new box) that keep what they replace."""
