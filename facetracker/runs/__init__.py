"""Run folders (how a training process talks to everyone else), starting and stopping runs, and what the data root holds."""
