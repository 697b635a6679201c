"""The bundle exporter, end to end with the real toolchain: ONNX, litert-torch, TFLite Micro, gcc, Vela."""

import shutil
import subprocess

import numpy as np
import pytest
import torch

from edgedistill.bundle import MANIFEST, load_bundle
from edgedistill.errors import EdgedistillError
from edgedistill.frontend import MfccFrontEnd
from edgedistill.inference import Int8Classifier
from edgedistill.metrics import classification_metrics
from edgedistill.recipe import ExportSettings
from exporters.bundle import export_keyword_bundle
from exporters.c_header import c_identifier, c_string
from exporters.vela import compile_for_ethos_u
from bundle_checks import tflite_micro_runs, vela_figures_of_its_report
from tiny_dscnn import fit_tiny_dscnn

LABELS = ["on", "off", "_unknown_", "_silence_"]
FRAMES, MFCC = MfccFrontEnd().feature_shape
ROLES = {"model_int8", "model_float_onnx", "c_header", "vela_report", "model_card", "report"}


def _separable_features(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One fixed random pattern per class plus noise, on an MFCC-like scale (c0 much larger)."""
    centres = np.random.default_rng(1234).normal(0, 3, (len(LABELS), FRAMES, MFCC))
    centres[..., 0] = centres[..., 0] * 5 - 40
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(LABELS)
    return (centres[labels] + rng.normal(0, 1.5, (count, FRAMES, MFCC))).astype(np.float32), labels


def _float_metrics(model: torch.nn.Module, features: np.ndarray, labels: np.ndarray) -> dict:
    with torch.no_grad():
        predictions = model(torch.from_numpy(features)).argmax(1).numpy()
    return classification_metrics(labels, predictions, LABELS)


def _export(model, out_dir, calibration, test_features, test_labels, progress=None, **settings):
    return export_keyword_bundle(
        model, out_dir=out_dir, name="onoff", labels=LABELS, frontend=MfccFrontEnd(), calibration=calibration,
        test_features=test_features, test_labels=test_labels,
        float_metrics=_float_metrics(model, test_features, test_labels), settings=ExportSettings(**settings),
        dataset_ref={"path": "datasets/onoff", "version": "abc123"},
        recipe={"task": "keyword_spotting", "name": "onoff", "keywords": ["on", "off"]}, progress=progress)


@pytest.fixture(scope="module")
def trained():
    features, labels = _separable_features(256, seed=1)
    test_features, test_labels = _separable_features(96, seed=2)
    return fit_tiny_dscnn(features, labels, len(LABELS), steps=60), features, labels, test_features, test_labels


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory):
    model, features, _, test_features, test_labels = trained
    out_dir = tmp_path_factory.mktemp("export") / "onoff"
    messages = []
    manifest = _export(model, out_dir, features, test_features, test_labels, progress=messages.append)
    return out_dir, manifest, messages


def test_bundle_holds_every_file_with_matching_hashes(bundle):
    out_dir, manifest, messages = bundle
    loaded = load_bundle(out_dir)  # checks every sha256
    assert loaded == manifest
    assert ROLES <= {entry.role for entry in manifest.files}
    on_disk = {path.name for path in out_dir.iterdir()}
    assert on_disk == {entry.path for entry in manifest.files} | {MANIFEST}
    assert [p.name for p in out_dir.parent.iterdir()] == ["onoff"]  # no temp folder left beside it
    assert manifest.labels == LABELS and manifest.dataset["version"] == "abc123"
    assert manifest.input.frontend == MfccFrontEnd().spec()
    assert any("Vela" in message for message in messages)


def test_int8_model_has_int8_io_small_size_and_keeps_accuracy(bundle, trained):
    out_dir, manifest, _ = bundle
    model_file = out_dir / manifest.file("model_int8").path
    classifier = Int8Classifier(model_file)
    assert classifier.input_quantization == manifest.input.quantization
    assert classifier.output_quantization == manifest.output.quantization
    assert (manifest.input.quantization.dtype, manifest.output.quantization.dtype) == ("int8", "int8")
    assert classifier.input_shape == manifest.input.shape == [1, FRAMES, MFCC]
    assert model_file.stat().st_size < 40_000  # width-16 DS-CNN: ~20 KB
    float_accuracy, int8_accuracy = manifest.metrics["float"]["accuracy"], manifest.metrics["int8"]["accuracy"]
    assert float_accuracy >= 0.9
    assert float_accuracy - int8_accuracy <= ExportSettings().max_int8_accuracy_drop
    assert manifest.metrics["int8_vs_float"]["top1_agreement"] >= 0.95


def test_every_int8_bias_has_the_scale_the_kernels_assume(bundle):
    """int8 kernels read a bias as int32 at input scale x weight scale; a bias quantised at any other
    scale is silently wrong (litert-torch did that to the classifier behind global pooling)."""
    from ai_edge_litert.interpreter import Interpreter

    out_dir, manifest, _ = bundle
    interpreter = Interpreter(model_path=str(out_dir / manifest.file("model_int8").path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    checked = []
    for op in interpreter._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        activation, weights, bias = (tensors[i]["quantization_parameters"]["scales"] for i in op["inputs"])
        np.testing.assert_allclose(bias, activation[0] * weights, rtol=1e-5, err_msg=op["op_name"])
        checked.append(op["op_name"])
    assert checked.count("FULLY_CONNECTED") == 1 and len(checked) == 10  # stem, 4 x (dw + pw), classifier


def test_tflite_micro_runs_the_model_and_reports_its_arena(bundle):
    out_dir, manifest, _ = bundle
    micro = manifest.targets["tflite_micro"]
    assert micro["model_bytes"] == manifest.file("model_int8").bytes
    assert micro["checked_inputs"] == 64  # TFLM_CHECK_INPUTS of the 96 test inputs
    assert micro["top1_agreement"] >= 0.95 and micro["within_one_step"] >= 0.95
    # the arena it states is exactly what the model needs on the device: enough, and 16 bytes less is not
    assert tflite_micro_runs(out_dir / manifest.file("model_int8").path, micro["arena_bytes"], manifest.input.shape)
    assert not tflite_micro_runs(out_dir / manifest.file("model_int8").path, micro["arena_bytes"] - 16,
                                 manifest.input.shape)


def test_onnx_matches_torch(bundle, trained):
    import onnxruntime

    out_dir, manifest, _ = bundle
    model, _, _, test_features, _ = trained
    session = onnxruntime.InferenceSession(str(out_dir / manifest.file("model_float_onnx").path))
    with torch.no_grad():
        expected = model(torch.from_numpy(test_features[:16])).numpy()
    np.testing.assert_allclose(session.run(None, {"features": test_features[:16]})[0], expected, atol=1e-4)
    assert not list(out_dir.glob("*.onnx.data"))


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_c_header_compiles_and_holds_the_exact_model(bundle, tmp_path):
    out_dir, manifest, _ = bundle
    header = out_dir / manifest.file("c_header").path
    source = tmp_path / "use_model.c"
    source.write_text(f'#include "{header}"\n'
                      "#include <stddef.h>\n"
                      "_Static_assert(_Alignof(onoff_model) >= 16, \"model must be 16-byte aligned\");\n"
                      "size_t use(void) { return onoff_model_len + ONOFF_ARENA_BYTES + ONOFF_LABEL_COUNT\n"
                      "  + sizeof onoff_dct_coefs / sizeof(float) + onoff_filter_pos[0] + onoff_filter_lengths[0]\n"
                      "  + (size_t)(onoff_filter_coefs[0] + onoff_window[1] + ONOFF_INPUT_SCALE);\n}\n")
    result = subprocess.run(["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", str(source)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = header.read_text()
    body = text[text.index("onoff_model[") :].split("{", 1)[1].split("}", 1)[0]
    model_bytes = bytes(int(token, 16) for token in body.replace("\n", "").split(",") if token.strip())
    assert model_bytes == (out_dir / manifest.file("model_int8").path).read_bytes()
    assert f"#define ONOFF_INPUT_ZERO_POINT ({manifest.input.quantization.zero_point})" in text
    assert f"#define ONOFF_ARENA_BYTES {manifest.targets['tflite_micro']['arena_bytes']}" in text


def test_vela_compiles_everything_onto_the_npu(bundle):
    out_dir, manifest, _ = bundle
    vela = manifest.targets["vela"]
    assert vela["status"] == "ok" and vela["accelerator"] == "Ethos_U55_128"
    assert vela_figures_of_its_report(out_dir / manifest.file("vela_report").path, vela)
    assert vela["npu_operator_share"] == 1.0 and vela["cpu_operators"] == 0  # adaptive pooling stays channels-last


def test_model_card_and_report_describe_the_bundle(bundle):
    out_dir, manifest, _ = bundle
    card = (out_dir / "README.md").read_text()
    assert all(f"`{label}`" in card for label in LABELS)
    assert str(manifest.input.quantization.scale) in card and "synthetic" in card
    report = (out_dir / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 2  # float and int8 confusion matrices
    assert "http://" not in report and "https://" not in report  # self-contained
    assert "Ethos_U55_128" in report


def test_too_large_int8_drop_raises_and_keeps_the_old_bundle(bundle, trained, tmp_path):
    model, features, *_ = trained
    # Inputs on the float model's decision boundaries: labelled with the float answer, float accuracy
    # is 100%, and int8 rounding flips some of them.
    candidates = np.random.default_rng(5).normal(0, 1, (3000, FRAMES, MFCC)).astype(np.float32)
    candidates = candidates * features.std(axis=0) + features.mean(axis=0)
    with torch.no_grad():
        logits = model(torch.from_numpy(candidates)).numpy()
    top_two = np.sort(logits, axis=1)[:, -2:]
    closest = np.argsort(top_two[:, 1] - top_two[:, 0])[:60]
    test_features, test_labels = candidates[closest], logits[closest].argmax(1)
    old_bundle = tmp_path / "onoff"
    shutil.copytree(bundle[0], old_bundle)
    before = (old_bundle / MANIFEST).read_bytes()
    with pytest.raises(EdgedistillError) as raised:
        _export(model, old_bundle, features, test_features, test_labels,
                formats=["tflite"], max_int8_accuracy_drop=0.0)
    assert "float 100.0%" in raised.value.problem and "int8" in raised.value.problem
    assert "max_int8_accuracy_drop" in raised.value.hint
    assert (old_bundle / MANIFEST).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["onoff"]


def test_refuses_to_replace_a_folder_that_is_not_a_bundle(trained, tmp_path):
    model, features, _, test_features, test_labels = trained
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(EdgedistillError, match="not a bundle"):
        _export(model, tmp_path, features, test_features, test_labels)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_vela_failure_is_reported_not_raised():
    result = compile_for_ethos_u(b"this is not a tflite model")
    assert result.figures == {"status": "failed",
                              "reason": f"Vela exited with 1: {result.console.strip().splitlines()[-1]}"}
    assert "Compilation failed" in result.console and (result.summary_csv, result.optimised_model) == (None, None)


def test_c_names_and_strings_are_safe():
    assert c_identifier("digits-v2.1") == "digits_v2_1"
    assert c_identifier("2go") == "m_2go"
    assert c_string('say "hi"\\') == '"say \\"hi\\"\\\\"'
    assert c_string("né") == '"n\\303\\251"'


def test_a_bundle_replaces_the_promoted_one_only_when_as_good_on_the_same_held_out_set(tmp_path):
    from tones import export_tones_bundle

    promoted = tmp_path / "bundle"
    lenient = ExportSettings(formats=["tflite"], max_int8_accuracy_drop=1.0)  # the half-trained model may drop more
    first = load_bundle(export_tones_bundle(tmp_path / "bundles" / "first", promote_to=promoted, settings=lenient))
    assert first.metrics["promotion"] == {"promote": True, "reason": "no bundle was promoted before"}
    assert load_bundle(promoted).file("model_int8").sha256 == first.file("model_int8").sha256

    worse_dir = export_tones_bundle(tmp_path / "bundles" / "worse", steps=3, promote_to=promoted, settings=lenient)
    worse = load_bundle(worse_dir)
    promotion = worse.metrics["promotion"]
    # the promoted model, measured again on the same held-out clips, scores what its own export measured
    assert promotion["scores"]["before"]["held_out"] == pytest.approx(first.metrics["int8"]["accuracy"])
    assert promotion["scores"]["now"]["held_out"] == pytest.approx(worse.metrics["int8"]["accuracy"])
    assert worse.metrics["int8"]["accuracy"] < first.metrics["int8"]["accuracy"]
    assert not promotion["promote"] and "export.promote: always" in promotion["reason"]
    assert load_bundle(promoted).file("model_int8").sha256 == first.file("model_int8").sha256  # kept
    card = (worse_dir / "README.md").read_text()
    assert "Promoted to the run's `bundle/`: no" in card and "| int8 accuracy |" in card
    assert "<h2>Against the promoted bundle</h2>" in (worse_dir / "report.html").read_text()

    always = lenient.model_copy(update={"promote": "always"})
    forced = load_bundle(export_tones_bundle(tmp_path / "bundles" / "forced", steps=3, promote_to=promoted,
                                             settings=always))
    assert forced.metrics["promotion"]["promote"] and "promoted as the recipe says" in forced.metrics["promotion"]["reason"]
    assert load_bundle(promoted).file("model_int8").sha256 == forced.file("model_int8").sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "bundles"]  # no building folder left


def test_a_bundle_counts_as_made_only_whole_from_the_same_recipe_and_promoted_when_it_was_to_be(tmp_path):
    from edgedistill.recipe import parse_recipe
    from flows.runs import RunPaths
    from tones import export_tones_bundle

    recipe = parse_recipe({"task": "keyword_spotting", "name": "tones", "keywords": ["low", "high"]}, "a recipe")
    paths = RunPaths(tmp_path)
    made = export_tones_bundle(paths.bundle_of("v1"), promote_to=paths.bundle, recipe=recipe.model_dump(mode="json"),
                               settings=ExportSettings(formats=["tflite"]))
    assert paths.bundle_made("v1", recipe) == load_bundle(made)
    assert paths.bundle_made("v2", recipe) is None  # another version
    assert paths.bundle_made("v1", recipe.model_copy(update={"seed": 1})) is None  # another recipe
    shutil.rmtree(paths.bundle)  # as if stopped before the promotion: not done yet
    assert paths.bundle_made("v1", recipe) is None
    (made / "README.md").write_text("changed")  # not whole
    assert paths.bundle_made("v1", recipe) is None
