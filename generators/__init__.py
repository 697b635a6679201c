"""Samples made without people's labels: synthetic speech and its augmentation, the team's photos,
diffusion images, composites."""
