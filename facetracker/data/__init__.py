"""Dataset folders in every format the app reads, images read safely, and augmentation."""
