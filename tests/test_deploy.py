"""`edgedistill deploy` and prefect.yaml, on a real Prefect server: a scheduled run leaves a bundle, and the
runs after it, with unchanged inputs, make nothing again."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from edgedistill.dataset import Dataset
from labelers.label_studio_server import free_port
from tiny_recipes import tiny_recipe

REPO = Path(__file__).parents[1]
PREFECT = Path(sys.executable).with_name("prefect")

# the smallest run the keyword pipeline makes: one engine, one variant per voice, one epoch
TINY_RECIPE = tiny_recipe(speech={"engines": ["espeak-ng"], "variants_per_voice": 1}, whisper_check={"enabled": False},
                          train={"epochs": 1, "width": 8}, export={"formats": ["tflite"], "calibration_samples": 20})


def _start(args: list, log: Path, env: dict) -> subprocess.Popen:
    """A process in a session of its own, so that stopping it can reach every process it started."""
    with log.open("w") as sink:
        return subprocess.Popen(args, cwd=REPO, env=os.environ | env, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM, as Ctrl-C or a service manager stops it; then nothing of its tree may be left."""
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    for _ in range(60):
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    pytest.fail(f"{process.args[:4]} left processes running after SIGTERM")


@pytest.fixture
def prefect_server(tmp_path):
    """`prefect server start` on a free port with a home of its own; yields its API URL."""
    port = free_port()
    server = _start([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], tmp_path / "server.log",
                    {"PREFECT_HOME": str(tmp_path / "server-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    api = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(360):
            try:
                if httpx.get(f"{api}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail("the Prefect server did not answer within 3 minutes")
        yield api
    finally:
        _stop(server)


def _flow_runs(api: str) -> list[dict]:
    return httpx.post(f"{api}/flow_runs/filter", json={"sort": "START_TIME_ASC"}).raise_for_status().json()


def _wait_for_completed_runs(api: str, count: int, log: Path, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _flow_runs(api)
        failed = [run for run in runs if run["state_type"] in ("FAILED", "CRASHED")]
        assert not failed, f"{failed[0]['state_name']}: {failed[0]['state']['message']}\n{log.read_text()[-3000:]}"
        completed = [run for run in runs if run["state_type"] == "COMPLETED"]
        if len(completed) >= count:
            return completed
        time.sleep(2)
    pytest.fail(f"fewer than {count} completed flow runs after {timeout:.0f} s\n{log.read_text()[-3000:]}")


def _made_files(out: Path) -> dict[str, object]:
    """What the stages made, and when: every file of the dataset, the training checkpoints and the bundles with
    its modification time, and the model's bytes (a rerun of training resumes from the finished checkpoint and
    writes the same model again)."""
    made = {str(path.relative_to(out)): path.stat().st_mtime_ns for folder in ("dataset", "model/checkpoints",
                                                                               "bundles", "bundle")
            for path in (out / folder).rglob("*") if path.is_file()}
    return made | {"model/model.pt": (out / "model" / "model.pt").read_bytes()}


def _shard_task_runs(api: str, flow_run: dict) -> list[str]:
    task_runs = httpx.post(f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run["id"]]}}})
    return [run["name"] for run in task_runs.raise_for_status().json() if "-shard-" in run["name"]]


@pytest.mark.slow
def test_a_deployed_recipe_runs_on_its_schedule_and_reruns_make_nothing(prefect_server, tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    out = tmp_path / "run"
    client_env = {"PREFECT_API_URL": prefect_server, "PREFECT_HOME": str(tmp_path / "client-home")}
    log = tmp_path / "deploy.log"
    # a short interval, and a runner that looks for due runs often, keep the test short
    served = _start([sys.executable, "-m", "flows.cli", "deploy", str(recipe), "--interval", "15", "--out", str(out)],
                    log, client_env | {"PREFECT_RUNNER_POLL_FREQUENCY": "2"})
    try:
        first = _wait_for_completed_runs(prefect_server, 1, log, timeout=600)[0]
        assert (out / "bundle" / "manifest.json").exists()
        versions = [v.id for v in Dataset.open(out / "dataset").info.versions]
        made = _made_files(out)
        assert any(name.startswith("dataset/versions/") for name in made)
        assert any(name.startswith("model/checkpoints/") for name in made)
        assert any(name.startswith("bundles/") for name in made) and "bundle/manifest.json" in made
        assert _shard_task_runs(prefect_server, first)  # the first run did the work, shard by shard

        second = _wait_for_completed_runs(prefect_server, 2, log, timeout=300)[1]
        assert second["parameters"] == first["parameters"] and second["deployment_id"] == first["deployment_id"]
        assert [v.id for v in Dataset.open(out / "dataset").info.versions] == versions
        assert _made_files(out) == made
        assert _shard_task_runs(prefect_server, second) == []
    finally:
        _stop(served)
    # stopping paused the schedule: nothing runs the recipe until it is served again
    deployment = httpx.get(f"{prefect_server}/deployments/{first['deployment_id']}").json()
    assert deployment["paused"]

    # the work-pool way: prefect.yaml's deployment, run once by a process worker with this run's parameters
    work_pool = subprocess.run([PREFECT, "work-pool", "create", "edgedistill", "--type", "process"], cwd=REPO,
                               env=os.environ | client_env, capture_output=True, text=True, timeout=120)
    assert work_pool.returncode == 0, work_pool.stdout[-2000:]
    deployed = subprocess.run([PREFECT, "--no-prompt", "deploy", "--all"], cwd=REPO, env=os.environ | client_env,
                              capture_output=True, text=True, timeout=300)
    assert deployed.returncode == 0, deployed.stdout[-3000:]
    run = subprocess.run([PREFECT, "deployment", "run", "edgedistill-recipe/digits-nightly", "--param",
                          f"recipe_path={recipe}", "--param", f"out={out}"], cwd=REPO, env=os.environ | client_env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    worker = subprocess.run([PREFECT, "worker", "start", "--pool", "edgedistill", "--run-once"], cwd=tmp_path,
                            env=os.environ | client_env, capture_output=True, text=True, timeout=600)
    assert worker.returncode == 0, worker.stdout[-3000:]
    # (the nightly schedule's own runs wait for 03:00 with the digits recipe)
    by_worker = [r for r in _flow_runs(prefect_server) if r["parameters"] == {"recipe_path": str(recipe), "out": str(out)}
                 and r["deployment_id"] != first["deployment_id"]]
    assert [r["state_type"] for r in by_worker] == ["COMPLETED"], worker.stdout[-3000:]
    assert _made_files(out) == made


def test_deploy_needs_one_schedule_and_a_server(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)

    def deploy(*args: str, **env: str) -> subprocess.CompletedProcess:
        environment = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {
            "PREFECT_HOME": str(tmp_path / "home"), "COLUMNS": "200"} | env
        return subprocess.run([sys.executable, "-m", "flows.cli", "deploy", str(recipe), *args], cwd=REPO,
                              env=environment, capture_output=True, text=True, timeout=300)

    for args, problem in [((), "exactly one schedule"), (("--cron", "0 3 * * *", "--interval", "60"), "exactly one"),
                          (("--cron", "every night"), "is not a cron schedule"),
                          (("--interval", "60"), "PREFECT_API_URL is not set")]:
        result = deploy(*args)
        assert result.returncode == 2 and problem in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "prefect server start" in deploy("--interval", "60").stderr
    unanswered = deploy("--interval", "60", PREFECT_API_URL=f"http://127.0.0.1:{free_port()}/api")
    assert unanswered.returncode == 2 and "does not answer" in unanswered.stderr, unanswered.stderr
