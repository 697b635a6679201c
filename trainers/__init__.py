"""Compact models and their evaluation: the DS-CNN keyword spotter, the FOMO detector, YOLO."""
