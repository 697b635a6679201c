"""The human side of a bundle: a README.md model card and a self-contained report.html.

Both are rendered from the manifest alone, so they can never say something the manifest does not.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from typing import Any

import jinja2
import numpy as np
import yaml

from edgedistill.boxes import Detections
from edgedistill.bundle import Manifest
from edgedistill.recipe import SILENCE, UNKNOWN
from exporters.c_header import c_identifier

_NEGATIVE_MEANING = {UNKNOWN: "any other word or sound", SILENCE: "silence or background noise"}
_NEGATIVE_KINDS = {"confusable": "words that sound like a keyword", "everyday": "everyday words",
                   "partial": "the first or last part of a keyword", "phrase": "windows of running speech",
                   "silence": "silence and noise", "recorded": "other words in real recordings"}
_ORIGINS = {"synthetic": "synthetic voices", "recordings": "mined from real recordings"}


def _percent(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


def _kib(value: Any) -> str:
    return "n/a" if value is None else f"{int(value):,} B ({int(value) / 1024:.1f} KiB)"


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:,}"


def _environment(autoescape: bool) -> jinja2.Environment:
    environment = jinja2.Environment(autoescape=autoescape, undefined=jinja2.StrictUndefined,
                                     trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    environment.filters.update(percent=_percent, kib=_kib, number=_number)
    return environment


def _common_context(manifest: Manifest) -> dict:
    """What every model card and report shows, whatever the task."""
    return {
        "m": manifest, "frontend": manifest.input.frontend,
        "float_metrics": manifest.metrics.get("float", {}), "int8_metrics": manifest.metrics.get("int8", {}),
        "micro": manifest.targets.get("tflite_micro", {}), "vela": manifest.targets.get("vela", {}),
        "onnx": manifest.targets.get("onnx", {}), "agreement": manifest.metrics.get("int8_vs_float", {}),
        "recipe_yaml": yaml.safe_dump(manifest.recipe, sort_keys=False).strip() if manifest.recipe else "",
        "dataset_json": json.dumps(manifest.dataset, indent=2, default=str),
        "promotion": manifest.metrics.get("promotion"),
    }


def _context(manifest: Manifest) -> dict:
    """Everything the templates show, with missing figures as None rather than template errors."""
    float_metrics, int8_metrics = manifest.metrics.get("float", {}), manifest.metrics.get("int8", {})
    recall_rows = [{"label": label, "meaning": _NEGATIVE_MEANING.get(label, "keyword"),
                    "float": float_metrics.get("per_class_recall", {}).get(label),
                    "int8": int8_metrics.get("per_class_recall", {}).get(label)} for label in manifest.labels]
    false_accepts = [{"label": label, "float": float_metrics.get("false_accept_rate", {}).get(label),
                      "int8": int8_metrics.get("false_accept_rate", {}).get(label)}
                     for label in (UNKNOWN, SILENCE) if label in manifest.labels]
    frontend = manifest.input.frontend
    return _common_context(manifest) | {
        "keywords": [x for x in manifest.labels if x not in _NEGATIVE_MEANING],
        "clip_seconds": frontend["clip_samples"] / frontend["sample_rate"],
        "recall_rows": recall_rows, "false_accepts": false_accepts,
        "spec": manifest.streaming, "streaming": manifest.metrics.get("streaming", {}),
        "real": manifest.metrics.get("real", {}), "prefix": c_identifier(manifest.name),
        "negative_kinds": _NEGATIVE_KINDS, "by_origin": int8_metrics.get("by_origin", {}),
        "held_out_float": manifest.dataset.get("held_out_float", {}), "origin_names": _ORIGINS,
    }


_CARD_SIZE = """\
## Size and speed
- int8 model: {{ micro.get("model_bytes") | kib }}
{% if micro.get("arena_bytes") %}
- TFLite Micro tensor arena: {{ micro.get("arena_bytes") | kib }} (recorded on the host; add a margin).
  TFLite Micro's kernels gave the same top class as LiteRT on {{ micro.get("top1_agreement") | percent }} of {{ micro.get("checked_inputs") }} checked inputs.
{% endif %}
{% if vela.get("status") == "ok" %}
- {{ vela.accelerator }} (Vela estimate, {{ vela.system_config }}): {{ vela.sram_bytes | kib }} SRAM,
  {{ vela.flash_bytes | kib }} flash, {{ vela.cycles_total | number }} cycles = {{ "%.3f" % (vela.inference_seconds * 1000) }} ms per inference
  at {{ "%.0f" % (vela.clock_hz / 1e6) }} MHz, {{ vela.npu_operator_share | percent }} of operators on the NPU.
{% elif vela %}
- Ethos-U: not compiled ({{ vela.get("reason", vela.get("status")) }}).
{% endif %}

"""

_CARD_PROVENANCE = """\
{% if promotion %}
## What changed since the promoted bundle
{% if promotion.get("before") %}
- before: the bundle made {{ promotion.before.created }} from dataset version {{ promotion.before.dataset_version }}
  ({{ promotion.before.samples }} samples); now version {{ m.dataset.get("version") }} ({{ m.dataset.get("counts", {}).get("samples") }} samples).
{% endif %}
{% for step in m.dataset.get("lineage", []) if step.photos_added is defined or step.recordings_mined_now is defined %}
- new input in {{ step.stage }} version {{ step.version }}: {% if step.photos_added is defined %}{{ step.photos_added }} photos added, {{ step.photos_removed }} removed{% else %}{{ step.recordings_mined_now }} recordings mined{% endif %}.
{% endfor %}
{% if promotion.get("scores") %}

| on this bundle's held-out set | the promoted bundle | this bundle |
|---|---|---|
| int8 {{ promotion.measure }} | {{ promotion.scores.before.held_out | percent }} | {{ promotion.scores.now.held_out | percent }} |
{% if promotion.scores.now.real is defined %}
| int8, real {{ "recordings" if m.task == "keyword_spotting" else "photos" }} | {{ promotion.scores.before.real | percent }} | {{ promotion.scores.now.real | percent }} |
{% endif %}
{% endif %}

Promoted to the run's `bundle/`: {{ "yes" if promotion.promote else "no" }}, {{ promotion.reason }}.

{% endif %}
## Provenance
- created {{ m.created.isoformat(timespec="seconds") }} by edgedistill {{ m.edgedistill_version }}
- dataset: `{{ dataset_json | replace("\\n", " ") }}`
{% if recipe_yaml %}

Recipe:
```yaml
{{ recipe_yaml }}
```
{% endif %}
"""

_REPORT_SIZE = """\
{% if promotion and promotion.get("scores") %}
<h2>Against the promoted bundle</h2>
<p>Both int8 models on this bundle's held-out set; the promoted one was made {{ promotion.before.created }} from
dataset version {{ promotion.before.dataset_version }}. Promoted: {{ "yes" if promotion.promote else "no" }}, {{ promotion.reason }}.</p>
<table>
<tr><th></th><th>the promoted bundle</th><th>this bundle</th></tr>
<tr><td>int8 {{ promotion.measure }}, held out</td><td class="num">{{ promotion.scores.before.held_out | percent }}</td>
<td class="num">{{ promotion.scores.now.held_out | percent }}</td></tr>
{% if promotion.scores.now.real is defined %}
<tr><td>int8, real {{ "recordings" if m.task == "keyword_spotting" else "photos" }}</td>
<td class="num">{{ promotion.scores.before.real | percent }}</td><td class="num">{{ promotion.scores.now.real | percent }}</td></tr>
{% endif %}
</table>
{% endif %}
<h2>Size and targets</h2>
<table>
<tr><td>int8 .tflite</td><td class="num">{{ micro.get("model_bytes") | kib }}</td></tr>
<tr><td>TFLite Micro arena</td><td class="num">{{ micro.get("arena_bytes") | kib }}</td></tr>
<tr><td>TFLite Micro vs LiteRT (same top class / identical int8 outputs)</td>
<td class="num">{{ micro.get("top1_agreement") | percent }} / {{ micro.get("exact_agreement") | percent }}</td></tr>
{% if onnx %}<tr><td>ONNX vs PyTorch, largest logit difference</td><td class="num">{{ "%.2g" % onnx.get("max_abs_logit_difference", 0) }}</td></tr>{% endif %}
</table>
{% if vela.get("status") == "ok" %}
<h3>Ethos-U ({{ vela.accelerator }}, Vela estimate)</h3>
<table>
<tr><td>system config / memory mode</td><td>{{ vela.system_config }} / {{ vela.memory_mode }}</td></tr>
<tr><td>SRAM</td><td class="num">{{ vela.sram_bytes | kib }}</td></tr>
<tr><td>flash</td><td class="num">{{ vela.flash_bytes | kib }}</td></tr>
<tr><td>cycles per inference</td><td class="num">{{ vela.cycles_total | number }}</td></tr>
<tr><td>time per inference</td><td class="num">{{ "%.3f" % (vela.inference_seconds * 1000) }} ms at {{ "%.0f" % (vela.clock_hz / 1e6) }} MHz</td></tr>
<tr><td>operators on the NPU</td><td class="num">{{ vela.npu_operators }} of {{ vela.npu_operators + vela.cpu_operators }} ({{ vela.npu_operator_share | percent }})</td></tr>
</table>
{% elif vela %}
<p>Ethos-U: not compiled ({{ vela.get("reason", vela.get("status")) }}).</p>
{% endif %}

"""


MODEL_CARD = """\
# {{ m.name }}: keyword spotter

Listens to {{ "%.2g" % clip_seconds }} s of mono audio at {{ frontend.sample_rate }} Hz and says which of these it heard:
{% for row in recall_rows %}
- `{{ row.label }}`: {{ row.meaning }}
{% endfor %}

The model is a full-int8 DS-CNN for TensorFlow Lite Micro and Arm Ethos-U.

## Files
| file | what it is | bytes | sha256 |
|---|---|---:|---|
{% for f in m.files %}
| `{{ f.path }}` | {{ f.role }} | {{ f.bytes | number }} | `{{ f.sha256[:16] }}...` |
{% endfor %}

`manifest.json` holds the full hashes and every figure below in machine-readable form.

## How to feed it
1. **Audio**: mono float samples in [-1, 1] at {{ frontend.sample_rate }} Hz, clips of {{ frontend.clip_samples }} samples.
2. **Features** (CMSIS-DSP `arm_mfcc_f32`, the same code on the device and in training): frames of
   {{ frontend.frame_length }} samples (FFT length {{ frontend.frame_length }}) every {{ frontend.hop_length }} samples
   ({{ frontend.frames }} frames), {{ frontend.window }} window, magnitude spectrum, {{ frontend.mel_filters }} mel filters
   from {{ frontend.f_min }} to {{ frontend.f_max }} Hz, log(x + {{ frontend.log_offset }}), DCT to {{ frontend.mfcc }}
   coefficients. Input tensor: {{ m.input.shape }} (batch, frames, coefficients). The C header carries the
   filter bank, DCT matrix and window for `arm_mfcc_init_f32`.
{% if m.input.quantization %}
3. **Quantise** each feature: `q = clamp(round(x / {{ m.input.quantization.scale }}) + ({{ m.input.quantization.zero_point }}), -128, 127)` as int8.
{% endif %}
{% if m.output.quantization %}
4. **Read** the int8 output {{ m.output.shape }}: `logit = (q - ({{ m.output.quantization.zero_point }})) * {{ m.output.quantization.scale }}`;
   the largest logit is the answer; softmax of the logits gives scores.
{% endif %}

| index | label |
|---:|---|
{% for label in m.labels %}
| {{ loop.index0 }} | `{{ label }}` |
{% endfor %}

## How well it works
Measured on {{ int8_metrics.get("count", "n/a") }} held-out test clips.

| | float (PyTorch) | int8 (TFLite) |
|---|---:|---:|
| accuracy | {{ float_metrics.get("accuracy") | percent }} | {{ int8_metrics.get("accuracy") | percent }} |
{% for row in recall_rows %}
| recall `{{ row.label }}` | {{ row.float | percent }} | {{ row.int8 | percent }} |
{% endfor %}
{% for row in false_accepts %}
| false accepts on `{{ row.label }}` | {{ row.float | percent }} | {{ row.int8 | percent }} |
{% endfor %}
{% for kind, value in int8_metrics.get("false_accept_rate_by_negative", {}).items() %}
| false accepts on {{ negative_kinds.get(kind, kind) }} | | {{ value | percent }} |
{% endfor %}

A false accept is a negative clip (`_unknown_`, `_silence_`) called a keyword: the error that wakes a device for nothing.
{% if by_origin %}

The held-out test clips by where they come from (real recordings are held out whole: none of their clips was trained on):

| test clips | count | accuracy, float | accuracy, int8 | false accepts on `_unknown_`, int8 |
|---|---:|---:|---:|---:|
{% for origin, figures in by_origin.items() %}
| {{ origin_names.get(origin, origin) }} | {{ figures.count }} | {{ held_out_float.get(origin, {}).get("accuracy") | percent }} | {{ figures.accuracy | percent }} | {{ figures.false_accept_rate.get("_unknown_") | percent }} |
{% endfor %}
{% endif %}
{% if agreement %}
The int8 model picks the same class as the float model on {{ agreement.get("top1_agreement") | percent }} of test clips.
{% endif %}

{% if real %}
## On real recordings
Measured on {{ real.clips }} real recordings from {{ real.speakers }} speakers ({{ real.keyword_clips }} keyword clips from
{{ real.keyword_speakers }} speakers, {{ real.non_keyword_clips }} clips of other words or sounds), never used in training.

| | int8 (TFLite) |
|---|---:|
| keyword clips recognised (top class) | {{ real.keyword_accuracy | percent }} |
| other words rejected (top class `_unknown_` or `_silence_`) | {{ real.non_keyword_rejected | percent }} |
{% if spec %}
{% if real.streaming.get("false_accepts_per_hour") is not none %}
| streaming: false accepts per hour of other speech ({{ "%.2f" % (real.streaming.non_keyword_hours * 60) }} min joined) | {{ "%.1f" % real.streaming.false_accepts_per_hour }} |
{% endif %}
{% if real.streaming.get("false_reject_rate") is not none %}
| streaming: keyword clips missed | {{ real.streaming.false_reject_rate | percent }} |
{% endif %}
{% endif %}
{% for label, value in real.per_keyword_accuracy.items() %}
| recognised `{{ label }}` | {{ value | percent }} |
{% endfor %}
{% if real.false_accepts_by_word %}

Other words taken for a keyword (times / clips): {% for word, counts in real.false_accepts_by_word.items() %}{{ word }} {{ counts[0] }}/{{ counts[1] }}{{ ", " if not loop.last }}{% endfor %}.
{% endif %}

{% endif %}
{% if spec %}
## Listening to a stream
Run the model every {{ spec.stride_frames }} feature frames ({{ "%g" % spec.stride_seconds }} s) on the newest {{ frontend.frames }} frames,
average the softmax of the last {{ spec.smoothing_windows }} runs, report the keyword furthest above its threshold, then
report nothing for {{ "%g" % spec.refractory_seconds }} s. `edgedistill predict --stream` does exactly this.

| keyword | threshold | false rejects (held-out synthetic) |
|---|---:|---:|
{% for label, value in spec.thresholds.items() %}
| `{{ label }}` | {{ "%.3f" % value }} | {{ streaming.get("false_reject_rate_per_keyword", {}).get(label) | percent }} |
{% endfor %}

{% if streaming %}
On {{ "%.2f" % streaming.negative_hours }} h of held-out synthetic non-keyword audio the thresholds give
{{ "%.2f" % streaming.false_accepts_per_hour }} false accepts per hour (target {{ streaming.target_false_accepts_per_hour }}),
missing {{ streaming.false_reject_rate | percent }} of {{ streaming.keyword_clips }} held-out keyword clips.
{% endif %}

The device loop, with the C header's constants:
```c
static float history[{{ prefix | upper }}_SMOOTHING_WINDOWS][{{ prefix | upper }}_LABEL_COUNT];
static int runs = 0, quiet_runs = 0;
/* every {{ prefix | upper }}_STRIDE_FRAMES new feature frames: */
float *p = history[runs++ % {{ prefix | upper }}_SMOOTHING_WINDOWS];
softmax(dequantised_output, p, {{ prefix | upper }}_LABEL_COUNT);
int best = -1; float best_margin = 0.0f;
for (int k = 0; k < {{ prefix | upper }}_LABEL_COUNT; k++) {
  float mean = 0.0f; int n = runs < {{ prefix | upper }}_SMOOTHING_WINDOWS ? runs : {{ prefix | upper }}_SMOOTHING_WINDOWS;
  for (int j = 0; j < n; j++) mean += history[j][k] / n;
  if (mean - {{ prefix }}_thresholds[k] >= best_margin) { best_margin = mean - {{ prefix }}_thresholds[k]; best = k; }
}
if (quiet_runs > 0) quiet_runs--;
if (quiet_runs == 0 && best >= 0) { on_keyword({{ prefix }}_labels[best]); quiet_runs = {{ prefix | upper }}_REFRACTORY_RUNS; }
```

{% endif %}
""" + _CARD_SIZE + """## Intended use
Spotting a small, fixed set of spoken keywords on a microcontroller or NPU, in a stream of audio (above).

## Limits
- **Trained on synthetic speech**: text-to-speech voices with augmentation (noise, reverb, channel effects).
  The held-out test clips are synthetic too, from voices held out of training, so those figures are likely
  better than what real speakers and real microphones give{{ ": compare the real recordings above" if real else
  ". Record real clips on the target device and measure (recipe `evaluate: {real: PATH}`) before relying on it" }}.
- It knows only the labels above; words it never heard may land in any class, not only `_unknown_`.
- Accents, children's voices, far-field speech and loud rooms are covered only as far as the synthetic
  voices and augmentations covered them.

""" + _CARD_PROVENANCE


REPORT_HTML = """\
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ m.name }}: edgedistill report</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; } td, th { border: 1px solid #ccc; padding: .3rem .6rem; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } .worse { color: #b00; font-weight: bold; }
.figures img { max-width: 48%; } code { background: #f4f4f4; padding: 0 .2rem; }
</style></head><body>
<h1>{{ m.name }}</h1>
<p>Keyword spotter for: {% for k in keywords %}<code>{{ k }}</code>{{ ", " if not loop.last }}{% endfor %}.
Created {{ m.created.isoformat(timespec="seconds") }} by edgedistill {{ m.edgedistill_version }}.</p>

<h2>Accuracy</h2>
<table><tr><th></th><th>float (PyTorch)</th><th>int8 (TFLite)</th></tr>
<tr><td>accuracy</td><td class="num">{{ float_metrics.get("accuracy") | percent }}</td>
<td class="num">{{ int8_metrics.get("accuracy") | percent }}</td></tr>
<tr><td>test clips</td><td class="num">{{ float_metrics.get("count", "n/a") }}</td>
<td class="num">{{ int8_metrics.get("count", "n/a") }}</td></tr>
{% if agreement %}<tr><td>int8 picks the float model's class</td><td></td>
<td class="num">{{ agreement.get("top1_agreement") | percent }}</td></tr>{% endif %}
</table>

<h2>Recall per class</h2>
<table><tr><th>label</th><th>meaning</th><th>float</th><th>int8</th></tr>
{% for row in recall_rows %}
<tr><td><code>{{ row.label }}</code></td><td>{{ row.meaning }}</td><td class="num">{{ row.float | percent }}</td>
<td class="num{{ ' worse' if row.float is not none and row.int8 is not none and row.int8 < row.float }}">{{ row.int8 | percent }}</td></tr>
{% endfor %}
</table>

<h2>False accepts</h2>
<p>Share of negative clips that the model calls a keyword.</p>
<table><tr><th>negative class</th><th>float</th><th>int8</th></tr>
{% for row in false_accepts %}
<tr><td><code>{{ row.label }}</code></td><td class="num">{{ row.float | percent }}</td><td class="num">{{ row.int8 | percent }}</td></tr>
{% endfor %}
</table>

{% if det_image %}
<h2>Listening to a stream</h2>
<p>Every {{ "%g" % spec.stride_seconds }} s, posteriors averaged over {{ spec.smoothing_windows }} runs, {{ "%g" % spec.refractory_seconds }} s quiet
after a detection. On {{ "%.2f" % streaming.negative_hours }} h of held-out synthetic negatives: {{ "%.2f" % streaming.false_accepts_per_hour }}
false accepts per hour (target {{ streaming.target_false_accepts_per_hour }}), {{ streaming.false_reject_rate | percent }} of keyword clips missed.</p>
<table><tr><th>keyword</th><th>threshold</th><th>false rejects</th></tr>
{% for label, value in spec.thresholds.items() %}
<tr><td><code>{{ label }}</code></td><td class="num">{{ "%.3f" % value }}</td>
<td class="num">{{ streaming.get("false_reject_rate_per_keyword", {}).get(label) | percent }}</td></tr>
{% endfor %}
</table>
<img alt="DET curves" src="data:image/png;base64,{{ det_image }}">
{% endif %}
{% if real %}
<h2>Real recordings</h2>
<p>{{ real.clips }} recordings from {{ real.speakers }} speakers, never used in training.</p>
<table><tr><th></th><th>int8</th></tr>
<tr><td>keyword clips recognised ({{ real.keyword_clips }})</td><td class="num">{{ real.keyword_accuracy | percent }}</td></tr>
<tr><td>other words rejected ({{ real.non_keyword_clips }})</td><td class="num">{{ real.non_keyword_rejected | percent }}</td></tr>
{% if real.get("streaming") %}
<tr><td>streaming false accepts per hour</td><td class="num">{{ "%.1f" % real.streaming.get("false_accepts_per_hour", 0) }}</td></tr>
<tr><td>streaming keyword clips missed</td><td class="num">{{ real.streaming.get("false_reject_rate") | percent }}</td></tr>
{% endif %}
</table>
{% endif %}

<h2>Confusion matrices</h2>
<div class="figures">{% for title, png in confusion_images %}<img alt="{{ title }}" src="data:image/png;base64,{{ png }}">{% endfor %}</div>

""" + _REPORT_SIZE + """<h2>Limits</h2>
<p>Trained and tested on synthetic speech (text-to-speech voices with augmentation); expect lower accuracy
on real speakers and microphones. Measure on recordings from the target device before relying on it.</p>
</body></html>
"""


def _plot_png(size: tuple[float, float], draw: Callable[[Any], None]) -> bytes:
    """A matplotlib figure of `size` inches, drawn by `draw(axes)`, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=size, dpi=100)
    try:
        draw(axes)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        pyplot.close(figure)


def confusion_png(confusion: list[list[int]], labels: list[str], title: str) -> bytes:
    """A confusion matrix (rows: truth) as PNG bytes, counts written in the cells."""
    matrix = np.asarray(confusion)

    def draw(axes) -> None:
        axes.imshow(matrix, cmap="Blues")
        axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        axes.set_yticks(range(len(labels)), labels)
        axes.set_xlabel("predicted")
        axes.set_ylabel("true")
        axes.set_title(title)
        threshold = matrix.max() / 2 if matrix.size else 0
        for (row, column), count in np.ndenumerate(matrix):
            axes.text(column, row, str(count), ha="center", va="center",
                      color="white" if count > threshold else "black", fontsize=8)

    size = max(4.0, 0.5 * len(labels) + 2)
    return _plot_png((size, size), draw)


def det_png(curves: dict[str, list[list]], thresholds: dict[str, float], target: float | None) -> bytes:
    """False rejects against false accepts per hour, one line per keyword, its chosen threshold marked."""

    def draw(axes) -> None:
        for label, curve in curves.items():
            points = [(max(fa, 0.01), fr) for _, fa, fr in curve if fr is not None]
            if not points:
                continue
            line, = axes.plot(*zip(*points), marker=".", label=label)
            chosen = [(max(fa, 0.01), fr) for t, fa, fr in curve if fr is not None and t == thresholds.get(label)]
            if chosen:
                axes.plot(*chosen[0], marker="o", markersize=9, fillstyle="none", color=line.get_color())
        if target:
            axes.axvline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target}/h")
        axes.set_xscale("log")
        axes.set_xlabel("false accepts per hour (held-out synthetic negatives; 0 drawn at 0.01)")
        axes.set_ylabel("false reject rate")
        axes.set_title("DET per keyword (circles: the shipped thresholds)")
        axes.legend(fontsize=7, ncol=2)

    return _plot_png((7, 4.5), draw)


def model_card_markdown(manifest: Manifest) -> str:
    if manifest.task == "detection":
        return _environment(autoescape=False).from_string(DETECTION_MODEL_CARD).render(**_detection_context(manifest))
    return _environment(autoescape=False).from_string(MODEL_CARD).render(**_context(manifest))


def report_html(manifest: Manifest, sample_images: list[tuple[str, bytes]] | None = None) -> str:
    """The report; `sample_images` are (title, JPEG bytes) figures a detection report shows."""
    if manifest.task == "detection":
        samples = [(title, base64.b64encode(jpeg).decode()) for title, jpeg in sample_images or []]
        return _environment(autoescape=True).from_string(DETECTION_REPORT_HTML).render(
            **_detection_context(manifest), sample_images=samples)
    context = _context(manifest)
    images = []
    for key, title in (("float", "float (PyTorch)"), ("int8", "int8 (TFLite)")):
        confusion = manifest.metrics.get(key, {}).get("confusion")
        if confusion:
            png = confusion_png(confusion, manifest.labels, f"{title}, rows: truth")
            images.append((title, base64.b64encode(png).decode()))
    streaming = manifest.metrics.get("streaming", {})
    det = (base64.b64encode(det_png(streaming["det"], manifest.streaming.thresholds,
                                    streaming.get("target_false_accepts_per_hour"))).decode()
           if streaming.get("det") and manifest.streaming else None)
    return _environment(autoescape=True).from_string(REPORT_HTML).render(**context, confusion_images=images,
                                                                          det_image=det)


# -- detection ------------------------------------------------------------------------------------
def _detection_context(manifest: Manifest) -> dict:
    float_metrics, int8_metrics = manifest.metrics.get("float", {}), manifest.metrics.get("int8", {})
    classes = manifest.labels[1:]  # output channel 0 is the background
    rows = [{"label": label, "float": float_metrics.get("per_class", {}).get(label, {}),
             "int8": int8_metrics.get("per_class", {}).get(label, {})} for label in classes]
    return _common_context(manifest) | {
        "heatmap": manifest.input.frontend.get("heatmap", {}), "classes": classes,
        "grid": manifest.output.shape[1:3], "class_rows": rows,
        "yolo": manifest.metrics.get("model_yolo_onnx"), "yolo_int8": manifest.metrics.get("model_yolo_int8"),
        "yolo_files": {f.role: f.path for f in manifest.files if f.role.startswith("model_yolo")},
        "real": manifest.metrics.get("real", {}), "teacher_model": _teacher_name(manifest.recipe.get("autolabel", {})),
    }


def _teacher_name(autolabel: dict) -> str:
    if autolabel.get("labeler") == "teacher":
        return f"teacher {autolabel.get('teacher_adapter')}"
    return f"{autolabel.get('labeler')} {autolabel.get('model', '')}".strip()


DETECTION_MODEL_CARD = """\
# {{ m.name }}: FOMO object detector

Finds the centres of these objects in a {{ frontend.size }}x{{ frontend.size }} {{ "RGB" if frontend.channels == 3 else "grayscale" }} image:
{% for label in classes %}
- `{{ label }}`
{% endfor %}

The model is a full-int8 FOMO ("Faster Objects, More Objects") heat-map model: a MobileNetV2 backbone cut at
1/8 resolution, for TensorFlow Lite Micro and Arm Ethos-U. It gives a centre per object, not a box.

## Files
| file | what it is | bytes | sha256 |
|---|---|---:|---|
{% for f in m.files %}
| `{{ f.path }}` | {{ f.role }} | {{ f.bytes | number }} | `{{ f.sha256[:16] }}...` |
{% endfor %}

`manifest.json` holds the full hashes and every figure below in machine-readable form.

## How to feed it
1. **Image**: 8-bit RGB, upright (EXIF rotation applied){{ ", converted to gray (BT.601 luma)" if frontend.channels == 1 }}.
2. **Resize** to {{ frontend.size }}x{{ frontend.size }} ({{ frontend.interpolation }} interpolation): {% if frontend.resize == "letterbox" %}letterbox: scale the longer side to {{ frontend.size }}, keep the aspect ratio, centre it and pad with {{ frontend.pad_value }}{% else %}stretch to the square, ignoring the aspect ratio{% endif %}.
3. **Normalise**: `x = (pixel - {{ frontend.mean }}) * {{ frontend.scale }}`, channels-last; input tensor {{ m.input.shape }}.
{% if m.input.quantization %}
4. **Quantise**: `q = clamp(round(x / {{ m.input.quantization.scale }}) + ({{ m.input.quantization.zero_point }}), -128, 127)` as int8.
{% endif %}
{% if m.output.quantization %}
5. **Read** the int8 output {{ m.output.shape }} (a {{ grid[0] }}x{{ grid[1] }} grid of cells, each {{ heatmap.stride }} input pixels):
   `logit = (q - ({{ m.output.quantization.zero_point }})) * {{ m.output.quantization.scale }}`; softmax over the last axis.
{% endif %}
6. **Decode**: per class, cells with probability >= {{ heatmap.threshold }}; touching cells (8-neighbours) are one object whose
   centre is the probability-weighted mean of `(column + 0.5, row + 0.5) * {{ heatmap.stride }}` input pixels and whose score is
   its highest cell. Undo the resize to get original image pixels. `edgedistill predict` does exactly this.

| index | label |
|---:|---|
{% for label in m.labels %}
| {{ loop.index0 }} | `{{ label }}` |
{% endfor %}

## How well it works
Centroid F1 on {{ int8_metrics.get("images", "n/a") }} held-out test images: a found centre is right when it lies within
{{ "%.1f" % int8_metrics.get("radius_pixels", 0) }} input pixels of a true box centre of its class (one-to-one).

| | float (PyTorch) | int8 (TFLite) |
|---|---:|---:|
| F1 | {{ float_metrics.get("f1") | percent }} | {{ int8_metrics.get("f1") | percent }} |
| precision | {{ float_metrics.get("precision") | percent }} | {{ int8_metrics.get("precision") | percent }} |
| recall | {{ float_metrics.get("recall") | percent }} | {{ int8_metrics.get("recall") | percent }} |
{% for row in class_rows %}
| F1 `{{ row.label }}` | {{ row.float.get("f1") | percent }} | {{ row.int8.get("f1") | percent }} |
{% endfor %}
{% if agreement %}

The int8 model picks the same class as the float model in {{ agreement.get("cell_agreement") | percent }} of grid cells.
{% endif %}
{% if yolo_int8 %}

## The larger model: YOLO
For an NPU or a Linux board: a YOLO detector trained by ultralytics (AGPL-3.0 code; trained from
`{{ yolo_int8.model }}`, no pretrained weights) on the same splits.
{% if yolo %}
- `{{ yolo_files.model_yolo_onnx }}`, float: input (1, 3, {{ yolo.image_size }}, {{ yolo.image_size }}), RGB letterboxed,
  padded with 114, scaled to 0-1, channels first. Output (1, 4 + classes, anchors): box centre x, y, width, height
  in input pixels, then one 0-1 score per class. On {{ yolo.images }} held-out test images ({{ yolo.boxes }} boxes),
  COCO mAP50 {{ yolo.map50 | percent }}, mAP50-95 {{ yolo.map50_95 | percent }} (faster-coco-eval).
{% endif %}
- `{{ yolo_files.model_yolo_int8 }}`, full int8: input (1, {{ yolo_int8.image_size }}, {{ yolo_int8.image_size }}, 3) int8, the same
  letterboxed image channels last, quantised with the input's scale and zero point (pixel - 128 for 0-255 pixels).
  Two int8 outputs, each dequantised with its own scale: boxes (1, 4, anchors) and scores (1, classes, anchors),
  laid out as in the float model. COCO mAP50 {{ yolo_int8.map50 | percent }}, mAP50-95 {{ yolo_int8.map50_95 | percent }}
  on the same images.
{% if yolo_files.get("model_yolo_int8_ethos_u") %}
- `{{ yolo_files.model_yolo_int8_ethos_u }}`: the int8 model compiled by Vela for {{ yolo_int8.vela.accelerator }}:
  {{ yolo_int8.vela.npu_operator_share | percent }} of operators on the NPU, SRAM {{ yolo_int8.vela.sram_bytes | kib }},
  flash {{ yolo_int8.vela.flash_bytes | kib }}, {{ yolo_int8.vela.inferences_per_second | round(1) }} inferences/s at {{ "%.0f" % (yolo_int8.vela.clock_hz / 1e6) }} MHz.
{% endif %}
Keep scores above a threshold and apply per-class NMS.
{% endif %}
{% if real %}

## On real photos
Measured on {{ real.student.photos }} real photos with {{ real.student.objects }} labelled objects, never used in training
{%- if real.min_share %}; objects smaller than {{ real.min_share | percent }} of a photo's shorter side ({{ real.student.ignored_regions }} of them,
with crowd and invalid boxes) are not asked for, and a centre found on one counts neither way{% endif %}. A found centre
is right when it lies inside a labelled box of its class, one centre per box.

| | this model (int8) | its teacher ({{ teacher_model }}) |
|---|---:|---:|
{% for key in ("f1", "precision", "recall") %}
| {{ key }} | {{ real.student[key] | percent }} | {{ real.get("teacher", {}).get(key) | percent }} |
{% endfor %}
| objects found / missed | {{ real.student.tp }} / {{ real.student.fn }} | {{ real.get("teacher", {}).get("tp", "n/a") }} / {{ real.get("teacher", {}).get("fn", "n/a") }} |
| false alarms | {{ real.student.fp }} | {{ real.get("teacher", {}).get("fp", "n/a") }} |
{% if real.student.empty_photos %}
| false alarms per photo with no object ({{ real.student.empty_photos }} photos) | {{ "%.2f" % real.student.false_alarms_per_empty_photo }} | {{ "%.2f" % real.teacher.false_alarms_per_empty_photo if real.get("teacher") else "n/a" }} |
{% endif %}
{% if real.get("student_to_teacher_f1") is not none %}

The model keeps {{ real.student_to_teacher_f1 | percent }} of its teacher's F1 on these photos.
{% endif %}
{% endif %}

""" + _CARD_SIZE + """## Intended use
Counting and locating small, separate objects of a few classes on a microcontroller or NPU, where a box is not
needed. Objects closer together than a cell ({{ heatmap.stride }} input pixels) merge into one.

## Limits
- Trained on auto-labelled and composited images; the test images come from the same sources, so expect lower
  figures on photos from the target camera{{ ": compare the real photos above" if real else
  ". Measure there before relying on it (recipe `evaluate: {real: PATH}`)" }}.
- It only knows the classes above, at the sizes seen in training.

""" + _CARD_PROVENANCE


DETECTION_REPORT_HTML = """\
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ m.name }}: edgedistill report</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; } td, th { border: 1px solid #ccc; padding: .3rem .6rem; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } .worse { color: #b00; font-weight: bold; }
.figures img { max-width: 32%; image-rendering: pixelated; } code { background: #f4f4f4; padding: 0 .2rem; }
</style></head><body>
<h1>{{ m.name }}</h1>
<p>FOMO object detector for: {% for k in classes %}<code>{{ k }}</code>{{ ", " if not loop.last }}{% endfor %};
{{ frontend.size }}x{{ frontend.size }} {{ "RGB" if frontend.channels == 3 else "grayscale" }} input, {{ grid[0] }}x{{ grid[1] }} grid.
Created {{ m.created.isoformat(timespec="seconds") }} by edgedistill {{ m.edgedistill_version }}.</p>

<h2>Centroid F1</h2>
<p>On {{ int8_metrics.get("images", "n/a") }} held-out test images, match radius {{ "%.1f" % int8_metrics.get("radius_pixels", 0) }} input pixels.</p>
<table><tr><th></th><th>float (PyTorch)</th><th>int8 (TFLite)</th></tr>
{% for key in ("f1", "precision", "recall") %}
<tr><td>{{ key }}</td><td class="num">{{ float_metrics.get(key) | percent }}</td>
<td class="num{{ ' worse' if float_metrics.get(key) is not none and int8_metrics.get(key) is not none and int8_metrics.get(key) < float_metrics.get(key) }}">{{ int8_metrics.get(key) | percent }}</td></tr>
{% endfor %}
{% for row in class_rows %}
<tr><td>F1 <code>{{ row.label }}</code></td><td class="num">{{ row.float.get("f1") | percent }}</td>
<td class="num">{{ row.int8.get("f1") | percent }}</td></tr>
{% endfor %}
{% if agreement %}<tr><td>grid cells where int8 picks the float model's class</td><td></td>
<td class="num">{{ agreement.get("cell_agreement") | percent }}</td></tr>{% endif %}
</table>

{% if real %}
<h2>On real photos</h2>
<p>{{ real.student.photos }} real photos, {{ real.student.objects }} labelled objects{{ " of at least %s of the shorter side" % (real.min_share | percent) if real.min_share }}, never used in training.
A found centre is right when it lies inside a labelled box of its class.</p>
<table><tr><th></th><th>this model (int8)</th><th>its teacher ({{ teacher_model }})</th></tr>
{% for key in ("f1", "precision", "recall") %}
<tr><td>{{ key }}</td><td class="num">{{ real.student[key] | percent }}</td><td class="num">{{ real.get("teacher", {}).get(key) | percent }}</td></tr>
{% endfor %}
<tr><td>false alarms</td><td class="num">{{ real.student.fp }}</td><td class="num">{{ real.get("teacher", {}).get("fp", "n/a") }}</td></tr>
{% if real.get("student_to_teacher_f1") is not none %}<tr><td>share of the teacher's F1</td><td class="num">{{ real.student_to_teacher_f1 | percent }}</td><td></td></tr>{% endif %}
</table>
{% endif %}

<h2>Sample test images</h2>
<p>True boxes in green; int8 centroids as filled dots in the class colour, with class and score{{ "; on the real photos, the teacher's boxes in orange" if real }}.</p>
<div class="figures">{% for title, jpeg in sample_images %}<img alt="{{ title }}" title="{{ title }}" src="data:image/jpeg;base64,{{ jpeg }}">{% endfor %}</div>

""" + _REPORT_SIZE + """<h2>Limits</h2>
<p>Trained and tested on auto-labelled and composited images; expect lower figures on photos from the target
camera. Measure there before relying on it.</p>
</body></html>
"""

_CLASS_COLOURS = [(230, 25, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230)]


def detection_sample_jpeg(image: np.ndarray, boxes: np.ndarray, found: Detections, labels: list[str],
                          width: int = 320, teacher_boxes: np.ndarray | None = None) -> bytes:
    """An RGB image with its true boxes (green), the teacher's boxes (orange, drawn 2 px outside) and predicted
    centroids (class colour, label, score) as JPEG (photos and noisy composites are several times larger as PNG,
    and the report embeds them). Boxes are x0, y0, x1, y1."""
    import cv2

    scale = width / image.shape[1]
    canvas = cv2.resize(np.ascontiguousarray(image), (width, max(1, round(image.shape[0] * scale))),
                        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    for x0, y0, x1, y1 in np.asarray(boxes, np.float64).reshape(-1, 4) * scale:
        cv2.rectangle(canvas, (round(x0), round(y0)), (round(x1), round(y1)), (40, 200, 40), 1)
    for x0, y0, x1, y1 in np.asarray(teacher_boxes if teacher_boxes is not None else [], np.float64).reshape(-1, 4) * scale:
        cv2.rectangle(canvas, (round(x0) - 2, round(y0) - 2), (round(x1) + 2, round(y1) + 2), (255, 150, 0), 1)
    for class_id, score, (x, y) in zip(found.class_ids, found.scores, found.centres):
        colour = _CLASS_COLOURS[class_id % len(_CLASS_COLOURS)]
        point = (round(x * scale), round(y * scale))
        cv2.circle(canvas, point, 4, colour, -1)
        cv2.circle(canvas, point, 5, (255, 255, 255), 1)
        text = f"{labels[class_id]} {score:.2f}"
        (text_width, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)
        left = point[0] + 6 if point[0] + 6 + text_width < width else point[0] - 6 - text_width  # stay inside
        cv2.putText(canvas, text, (left, point[1] - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1, cv2.LINE_AA)
    _, encoded = cv2.imencode(".jpg", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return encoded.tobytes()
