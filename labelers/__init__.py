"""Labels put on samples: OWL-ViT/OWLv2, teacher detectors, Segment Anything, the Whisper check, and
the Label Studio review round trip."""
