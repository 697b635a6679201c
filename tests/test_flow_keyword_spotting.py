"""The whole keyword-spotting flow, through the CLI and a real (embedded) Prefect server."""

import contextlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import soundfile

from edgedistill.audio import fit_to_length, load_audio
from edgedistill.bundle import load_bundle
from edgedistill.dataset import Dataset
from edgedistill.metrics import classification_metrics
from edgedistill.recipe import is_keyword
from trainers.keyword_spotter import BACKGROUND_KINDS, negative_kind
from tiny_recipes import tiny_recipe



def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=os.environ | {"PREFECT_HOME": str(cwd / "prefect-home")}, timeout=1500)


def _cli_watching_servers(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, set[int]]:
    """_cli with stderr on a terminal (a pseudo-terminal), as people run it, so that progress bars show; and the
    process ids of the Prefect servers (uvicorn) the command and its workers started."""
    terminal, its_end = os.openpty()
    command = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                               stderr=its_end, text=True,
                               env=os.environ | {"PREFECT_HOME": str(cwd / "prefect-home"), "COLUMNS": "120"})
    os.close(its_end)

    def read_terminal() -> str:
        chunks = []
        with contextlib.suppress(OSError):  # EIO once the command has closed its end
            while chunk := os.read(terminal, 1 << 16):
                chunks.append(chunk)
        os.close(terminal)
        return b"".join(chunks).decode(errors="replace")

    servers: set[int] = set()
    with ThreadPoolExecutor(2) as readers:
        stdout, stderr = readers.submit(command.stdout.read), readers.submit(read_terminal)
        while command.poll() is None:
            with contextlib.suppress(psutil.Error):
                servers |= {child.pid for child in psutil.Process(command.pid).children(recursive=True)
                            if "uvicorn" in " ".join(child.cmdline())}
            time.sleep(0.2)
        return subprocess.CompletedProcess(command.args, command.returncode, stdout.result(), stderr.result()), servers


TASK_RUNS = """
import json
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    print(json.dumps(sorted(run.name.rsplit("-", 1)[0] for run in client.read_task_runs())))
"""


def _task_runs(cwd: Path) -> list[str]:
    """The names of the task runs the flow left in its Prefect server, without their random suffix."""
    done = subprocess.run([sys.executable, "-c", TASK_RUNS], cwd=Path(__file__).parents[1], capture_output=True,
                          text=True, env=os.environ | {"PREFECT_HOME": str(cwd / "prefect-home")}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _recorded_words(folder: Path) -> Path:
    """Stand-ins for a team's real recordings (espeak-ng's default voice, which the tiny recipe's voices may
    include: only the path through the pipeline is under test here), as a labels.csv folder."""
    folder.mkdir()
    rows = ["file,word,speaker"]
    for word in ("yes", "no", "stop"):
        subprocess.run(["espeak-ng", "-w", str(folder / f"{word}.wav"), word], check=True)
        rows.append(f"{word}.wav,{word},espeak")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.slow
def test_run_makes_a_bundle_predict_reads_it_and_a_rerun_resumes(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recorded = _recorded_words(tmp_path / "recorded")
    recipe.write_text(tiny_recipe(evaluate={"real": str(recorded)}))
    out = tmp_path / "run"
    first, servers = _cli_watching_servers("run", str(recipe), "--out", str(out), cwd=tmp_path)
    log = (out / "edgedistill.log").read_text()
    assert first.returncode == 0, first.stderr[-3000:] + log[-3000:]
    # one Prefect server for the run, not one more in each process-pool worker
    assert len(servers) == 1
    # people see progress and the closing table; the libraries' chatter is kept in the run's log
    assert "tiny: bundle ready" in first.stderr and "━━━━" in first.stderr
    for chatter in ("torchvision is not installed", "FutureWarning", "XNNPACK", "torchao"):
        assert chatter not in first.stderr and chatter in log
    manifest = load_bundle(out / "bundle")
    labels = manifest.labels
    assert labels == ["yes", "no", "_unknown_", "_silence_"]
    dataset = Dataset.open(out / "dataset")
    stages = [v.stage for v in dataset.info.versions]
    assert stages == ["synthesize", "whisper_check", "split", "augment"]
    augmented = dataset.samples()
    assert {s.split for s in augmented} == {"train", "val", "test"}
    # stages are tasks, and so is each shard of synthesis and of augmentation (the train stage's)
    task_runs = _task_runs(tmp_path)
    assert {"generate", "label", "train", "export", "generate-shard", "train-shard"} <= set(task_runs)

    # the held-out figures count exactly the held-out clips: the test split, and the background of val and test
    test = [s for s in augmented if s.split == "test"]
    assert manifest.metrics["int8"]["count"] == manifest.metrics["int8_vs_float"]["count"] == len(test)
    background = [s for s in augmented if s.split in ("val", "test") and negative_kind(s) in BACKGROUND_KINDS]
    streaming = manifest.metrics["streaming"]
    assert streaming["negative_hours"] == round(len(background) / 3600, 4)  # one-second clips
    assert streaming["keyword_clips"] == sum(is_keyword(s.class_name) for s in test)
    assert set(manifest.streaming.thresholds) == {"yes", "no"}

    # predict gives, clip by clip, exactly the answers the bundle's int8 and real-recording figures were counted from
    words = [recorded / f"{word}.wav" for word in ("yes", "no", "stop")]
    files = [dataset.media_path(s) for s in test] + words
    predicted = _cli("predict", str(out / "bundle"), *map(str, files), "--json", "--verbose", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert "XNNPACK" in predicted.stderr  # --verbose shows the libraries' output
    results = [json.loads(line) for line in predicted.stdout.strip().splitlines()]
    assert [r["file"] for r in results] == [str(f) for f in files]
    for result in results:
        assert list(result["scores"]) == labels and result["score"] == max(result["scores"].values())
        assert result["label"] == max(labels, key=result["scores"].get)
    heard = [labels.index(r["label"]) for r in results]
    int8 = classification_metrics([labels.index(s.class_name) for s in test], heard[:len(test)], labels)
    assert {k: manifest.metrics["int8"][k] for k in int8} == int8
    real = manifest.metrics["real"]
    assert (real["keyword_clips"], real["non_keyword_clips"], real["speakers"]) == (2, 1, 1)
    yes, no, stop = (r["label"] for r in results[len(test):])
    assert real["per_keyword_accuracy"] == {"yes": float(yes == "yes"), "no": float(no == "no")}
    assert real["keyword_accuracy"] == ((yes == "yes") + (no == "no")) / 2
    assert real["non_keyword_rejected"] == float(not is_keyword(stop))

    # streamed as the device listens, the non-keyword recording gives the false accepts the bundle states for it
    stop_audio = load_audio(words[2], 16000)
    soundfile.write(tmp_path / "stop16k.wav", fit_to_length(stop_audio, max(stop_audio.size, 16000)), 16000,
                    subtype="FLOAT")
    streamed = _cli("predict", str(out / "bundle"), str(tmp_path / "stop16k.wav"), "--stream", "--json", cwd=tmp_path)
    assert streamed.returncode == 0, streamed.stderr[-2000:]
    detections = [json.loads(line) for line in streamed.stdout.splitlines()]
    assert len(detections) == real["streaming"]["false_accepts"]
    for detection in detections:
        assert detection["score"] >= manifest.streaming.thresholds[detection["label"]]

    # a second run finds every version and the trained model: nothing is made again
    second = _cli("run", str(recipe), "--out", str(out), cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert [v.id for v in Dataset.open(out / "dataset").info.versions] == [v.id for v in dataset.info.versions]
    assert _task_runs(tmp_path).count("generate-shard") == task_runs.count("generate-shard")


def test_cli_reports_bad_recipe_clearly(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("task: keyword_spotting\nname: bad\nkeywords: []\n")
    result = _cli("generate", str(recipe), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert result.returncode == 2
    assert "keywords" in result.stderr and "at least one keyword" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()

