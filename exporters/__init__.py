"""Edge formats and the bundle: int8 TFLite, the TFLite Micro check, the C array, Vela for Ethos-U,
ONNX, the model card."""
