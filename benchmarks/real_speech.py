"""A keyword bundle on real speech, beside its synthetic held-out figures, printed as a table.

    .venv/bin/python benchmarks/real_speech.py BUNDLE [--real ../shared/real-speech-dev]

The real set is for measuring only, never training (a CSV of file,word[,speaker], a folder holding
labels.csv, or a folder of word folders). Without it the script says so and exits 0. Targets (issue 10):
keyword accuracy on real speakers >= 95%, real non-keyword words rejected >= 95%; streaming false accepts
per hour on the non-keyword clips joined into one recording, with the false rejects there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgedistill.bundle import Manifest, load_bundle
from edgedistill.frontend import MfccFrontEnd
from edgedistill.inference import Int8Classifier, softmax
from edgedistill.real_speech import evaluate_on_real, read_labelled_clips
from edgedistill.recipe import UNKNOWN, is_keyword

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REAL = ROOT.parent / "shared" / "real-speech-dev"


def measure_on_real(bundle: Path, real: Path) -> dict:
    manifest = load_bundle(bundle)
    classifier = Int8Classifier(bundle / manifest.file("model_int8").path)
    return evaluate_on_real(read_labelled_clips(real), manifest.labels, MfccFrontEnd.from_spec(manifest.input.frontend),
                            lambda features: softmax(classifier.logits(features)), manifest.streaming)


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def real_rows(manifest: Manifest, real: dict) -> list[tuple[str, str, str, str]]:
    """(figure, real, synthetic held-out, target) rows."""
    int8 = manifest.metrics.get("int8", {})
    synthetic = manifest.metrics.get("streaming", {})
    keyword_recall = [v for k, v in int8.get("per_class_recall", {}).items() if is_keyword(k) and v is not None]
    unknown_fa = int8.get("false_accept_rate", {}).get(UNKNOWN)
    stream = real.get("streaming", {})
    rows = [
        ("clips / speakers",
         f"{real['clips']} / {real['speakers']} (keywords {real['keyword_clips']} / {real['keyword_speakers']})",
         str(int8.get("count", "n/a")), ""),
        ("keywords recognised (top class)", _percent(real["keyword_accuracy"]),
         _percent(sum(keyword_recall) / len(keyword_recall)) if keyword_recall else "n/a", ">= 95%"),
        ("other words rejected (top class)", _percent(real["non_keyword_rejected"]),
         _percent(None if unknown_fa is None else 1 - unknown_fa), ">= 95%"),
    ]
    if manifest.streaming:
        rows += [
            ("streaming: false accepts / h",
             f"{stream.get('false_accepts_per_hour', 0):.1f} ({stream.get('false_accepts')} in "
             f"{stream.get('non_keyword_hours', 0) * 60:.1f} min)",
             f"{synthetic.get('false_accepts_per_hour', 0):.2f} ({synthetic.get('negative_hours', 0):.2f} h)",
             f"<= {synthetic.get('target_false_accepts_per_hour', 'n/a')}"),
            ("streaming: false rejects", _percent(stream.get("false_reject_rate")),
             _percent(synthetic.get("false_reject_rate")), "< 5%"),
        ]
    rows += [(f"  recognised {label}", _percent(value), "", "") for label, value in real["per_keyword_accuracy"].items()]
    worst = ", ".join(f"{word} {a}/{n}" for word, (a, n) in list(real["false_accepts_by_word"].items())[:10])
    rows.append(("most accepted other words", worst or "none", "", ""))
    return rows


def print_real_table(title: str, manifest: Manifest, real: dict) -> None:
    table = Table(title=title)
    for column in ("figure", "real dev set", "synthetic held-out", "target"):
        table.add_column(column)
    for row in real_rows(manifest, real):
        table.add_row(*row)
    Console(width=120).print(table)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help="labelled real recordings (never trained on)")
    args = parser.parse_args()
    if not args.real.exists():
        print(f"skipped: no real recordings at {args.real} (pass --real PATH)")
        return
    manifest = load_bundle(args.bundle)
    print_real_table(f"{manifest.name} on real speech ({args.real})", manifest, measure_on_real(args.bundle, args.real))


if __name__ == "__main__":
    main()
