"""A C header a firmware build can include: the model array, labels, quantisation and front-end constants.

For audio, the packed mel filters, DCT matrix and window are exactly the arrays `arm_mfcc_init_f32`
takes, so the device computes the same features as training and `edgedistill predict` did. For
images, the resize, normalisation and heat-map decoding constants of the manifest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from edgedistill.bundle import Quantization
from edgedistill.frontend import LOG_OFFSET, MfccFrontEnd
from edgedistill.image_frontend import HeatmapDecoding, ImageFrontEnd
from edgedistill.streaming import StreamingSpec

_VALUES_PER_LINE = 12


def c_identifier(name: str) -> str:
    """A bundle name as a C identifier prefix: `digits-v2.1` -> `digits_v2_1`."""
    identifier = re.sub(r"\W", "_", name, flags=re.ASCII).strip("_").lower() or "model"
    return f"m_{identifier}" if identifier[0].isdigit() else identifier


def c_string(text: str) -> str:
    """A C string literal; non-ASCII as octal escapes of its UTF-8 (hex escapes would swallow digits)."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def c_float(value: float) -> str:
    # 9 significant digits round-trip any float32 exactly
    text = f"{float(np.float32(value)):.9g}"
    return (text if any(c in text for c in ".en") else text + ".0") + "f"


def _rows(items: Iterable[str], indent: str = "    ") -> str:
    items = list(items)
    lines = [", ".join(items[i:i + _VALUES_PER_LINE]) for i in range(0, len(items), _VALUES_PER_LINE)]
    return ",\n".join(indent + line for line in lines)


def _array(c_type: str, name: str, items: list[str], align: bool = False) -> str:
    prefix = "alignas(16) " if align else ""
    return f"{prefix}const {c_type} {name}[{len(items)}] = {{\n{_rows(items)}\n}};\n"


def _model_section(prefix: str, model: bytes) -> str:
    data = _array("unsigned char", f"{prefix}_model", [f"0x{b:02x}" for b in model], align=True)
    return (f"/* The int8 .tflite flatbuffer. TFLite Micro reads it in place: keep it 16-byte aligned. */\n"
            f"{data}const unsigned int {prefix}_model_len = {len(model)}u;\n")


def _labels_section(prefix: str, labels: list[str]) -> str:
    upper = prefix.upper()
    return (f"/* Output index -> label. */\n#define {upper}_LABEL_COUNT {len(labels)}\n"
            f"const char *const {prefix}_labels[{upper}_LABEL_COUNT] = {{\n{_rows(map(c_string, labels))}\n}};\n")


def _quantization_section(prefix: str, input_shape: list[int], input_q: Quantization, output_q: Quantization,
                          arena_bytes: int | None, output_shape: list[int] | None = None) -> str:
    upper = prefix.upper()
    dims = "".join(f"#define {upper}_INPUT_DIM{i} {d}\n" for i, d in enumerate(input_shape))
    arena = (f"/* Tensor arena TFLite Micro's recording allocator measured on the host; add a margin for\n"
             f"   your platform's alignment and any extra ops. */\n#define {upper}_ARENA_BYTES {arena_bytes}\n"
             if arena_bytes else "")
    output_dims = "".join(f"#define {upper}_OUTPUT_DIM{i} {d}\n" for i, d in enumerate(output_shape or []))
    return (f"/* int8 input: q = round(feature / INPUT_SCALE) + INPUT_ZERO_POINT, saturated to [-128, 127]. */\n"
            f"{dims}{output_dims}#define {upper}_INPUT_SCALE {c_float(input_q.scale)}\n"
            f"#define {upper}_INPUT_ZERO_POINT ({input_q.zero_point})\n"
            f"/* int8 output (logits): logit = (q - OUTPUT_ZERO_POINT) * OUTPUT_SCALE. */\n"
            f"#define {upper}_OUTPUT_SCALE {c_float(output_q.scale)}\n"
            f"#define {upper}_OUTPUT_ZERO_POINT ({output_q.zero_point})\n{arena}")


def _frontend_section(prefix: str, frontend: MfccFrontEnd) -> str:
    upper = prefix.upper()
    lengths, positions, coefficients = frontend.packed_mel_filters
    constants = {
        "SAMPLE_RATE": frontend.sample_rate, "CLIP_SAMPLES": frontend.clip_samples,
        "FRAME_LENGTH": frontend.frame_length, "FFT_LENGTH": frontend.frame_length,
        "HOP_LENGTH": frontend.hop_length, "FRAMES": frontend.frames, "MEL_FILTERS": frontend.mel_filters,
        "MFCC_COUNT": frontend.mfcc, "MEL_COEFFICIENTS": len(coefficients),
    }
    defines = "".join(f"#define {upper}_{key} {value}\n" for key, value in constants.items())
    floats = (f"#define {upper}_F_MIN {c_float(frontend.f_min)}\n#define {upper}_F_MAX {c_float(frontend.f_max)}\n"
              f"#define {upper}_LOG_OFFSET {c_float(LOG_OFFSET)} /* arm_mfcc_f32 adds it before the log */\n")
    arrays = (
        _array("float", f"{prefix}_dct_coefs", [c_float(v) for v in frontend.dct_matrix.ravel()])
        + _array("uint32_t", f"{prefix}_filter_pos", [f"{int(v)}u" for v in positions])
        + _array("uint32_t", f"{prefix}_filter_lengths", [f"{int(v)}u" for v in lengths])
        + _array("float", f"{prefix}_filter_coefs", [c_float(v) for v in coefficients])
        + _array("float", f"{prefix}_window", [c_float(v) for v in frontend.window])
    )
    usage = (f"/* MFCC front end ({frontend.kind}): per frame of FRAME_LENGTH samples every HOP_LENGTH samples,\n"
             f"   FRAMES frames per clip of CLIP_SAMPLES mono samples (float, -1..1) at SAMPLE_RATE Hz:\n"
             f"     arm_mfcc_instance_f32 mfcc;\n"
             f"     arm_mfcc_init_f32(&mfcc, {upper}_FFT_LENGTH, {upper}_MEL_FILTERS, {upper}_MFCC_COUNT,\n"
             f"                       {prefix}_dct_coefs, {prefix}_filter_pos, {prefix}_filter_lengths,\n"
             f"                       {prefix}_filter_coefs, {prefix}_window);\n"
             f"     arm_mfcc_f32(&mfcc, frame, features_of_this_frame, scratch);  (scratch: 2 * FFT_LENGTH floats)\n"
             f"   Feature row f, coefficient c goes to input[f * MFCC_COUNT + c] before int8 quantisation. */\n")
    return usage + defines + floats + arrays


def _streaming_section(prefix: str, spec: StreamingSpec, labels: list[str]) -> str:
    upper = prefix.upper()
    thresholds = [c_float(min(t, 2.0)) for t in spec.threshold_vector(labels)]
    return (f"/* Streaming: run the model every STRIDE_FRAMES hops on the newest FRAMES feature rows, average the\n"
            f"   last SMOOTHING_WINDOWS softmax outputs, and report the keyword furthest above its threshold (the\n"
            f"   negative classes have 2.0: never reported); then report nothing for REFRACTORY_MS. */\n"
            f"#define {upper}_STRIDE_FRAMES {spec.stride_frames}\n"
            f"#define {upper}_SMOOTHING_WINDOWS {spec.smoothing_windows}\n"
            f"#define {upper}_REFRACTORY_MS {round(spec.refractory_seconds * 1000)}\n"
            f"#define {upper}_REFRACTORY_RUNS {spec.refractory_runs} /* model runs skipped after a detection */\n"
            + _array("float", f"{prefix}_thresholds", thresholds))


def _image_frontend_section(prefix: str, frontend: ImageFrontEnd, decoding: HeatmapDecoding) -> str:
    upper = prefix.upper()
    constants = {"IMAGE_SIZE": frontend.size, "IMAGE_CHANNELS": frontend.channels,
                 "LETTERBOX": int(frontend.resize == "letterbox"), "PAD_VALUE": frontend.pad_value,
                 "GRID_STRIDE": decoding.stride, "GRID_SIZE": frontend.size // decoding.stride,
                 "BACKGROUND_INDEX": decoding.background_index}
    defines = "".join(f"#define {upper}_{key} {value}\n" for key, value in constants.items())
    letterbox_note = " (aspect kept, centred, padded with PAD_VALUE)" if frontend.resize == "letterbox" else ""
    return (f"/* Image front end: RGB (or gray, BT.601 luma, when IMAGE_CHANNELS is 1) resized to IMAGE_SIZE square,\n"
            f"   {frontend.resize}{letterbox_note},"
            f" {frontend.interpolation} interpolation, channels-last;\n"
            f"   feature = (pixel - PIXEL_MEAN) * PIXEL_SCALE, then quantised as above.\n"
            f"   Output: (GRID_SIZE, GRID_SIZE, LABEL_COUNT) logits per cell; softmax over the last axis, a cell\n"
            f"   whose class probability is >= THRESHOLD holds that class; touching cells are one object whose centre\n"
            f"   is the probability-weighted mean of (column + 0.5, row + 0.5) * GRID_STRIDE input pixels. */\n"
            f"{defines}#define {upper}_PIXEL_MEAN {c_float(frontend.mean)}\n"
            f"#define {upper}_PIXEL_SCALE {c_float(frontend.scale)}\n"
            f"#define {upper}_THRESHOLD {c_float(decoding.threshold)}\n")


def c_header_text(*, name: str, model: bytes, labels: list[str], input_shape: list[int], input_quantization:
                  Quantization, output_quantization: Quantization, frontend: MfccFrontEnd | ImageFrontEnd,
                  arena_bytes: int | None, decoding: HeatmapDecoding | None = None,
                  output_shape: list[int] | None = None, streaming: StreamingSpec | None = None) -> str:
    """The header text; an `ImageFrontEnd` needs the heat map `decoding` too (a detection model)."""
    prefix = c_identifier(name)
    guard = f"{prefix.upper()}_MODEL_H"
    if isinstance(frontend, ImageFrontEnd):
        kind, frontend_text = "FOMO detection", _image_frontend_section(prefix, frontend, decoding or HeatmapDecoding())
    else:
        kind, frontend_text = "keyword-spotting", _frontend_section(prefix, frontend)
    return "\n".join([
        f"/* {name}: {kind} model exported by edgedistill.\n"
        f"   Defines data: include it from exactly one .c/.cc file (like `xxd -i` output). */\n"
        f"#ifndef {guard}\n#define {guard}\n\n#include <stdint.h>\n"
        f"#ifndef __cplusplus\n#include <stdalign.h>\n#endif\n",
        _labels_section(prefix, labels),
        _quantization_section(prefix, input_shape, input_quantization, output_quantization, arena_bytes,
                              output_shape),
        frontend_text,
        *([_streaming_section(prefix, streaming, labels)] if streaming else []),
        _model_section(prefix, model),
        f"#endif /* {guard} */\n",
    ])
