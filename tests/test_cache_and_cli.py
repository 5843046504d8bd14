import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from bnviz.cache import ResultStore
from bnviz.config import Config

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Toy(Config):
    value: int = 1


def test_single_flight_across_threads(tmp_path):
    store = ResultStore(tmp_path)
    calls = []

    def compute(report):
        calls.append(1)
        report(0.5, "half")
        threading.Event().wait(0.5)
        return {"answer": 42}

    results = []
    threads = [threading.Thread(target=lambda: results.append(ResultStore(tmp_path).get_or_compute("toy", Toy(), compute))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and results == [{"answer": 42}] * 6
    assert store.computations("toy", Toy()) == 1
    assert store.key("toy", Toy(1)) != store.key("toy", Toy(2))


def test_config_overrides_parse_types():
    from bnviz.experiments.home import HomeConfig

    cfg = HomeConfig().with_overrides(["steps=50", "lr=0.3", "hidden=[10,20]", "activation=relu"])
    assert cfg.steps == 50 and cfg.lr == 0.3 and cfg.hidden == (10, 20) and cfg.activation == "relu"
    assert HomeConfig.from_dict(json.loads(cfg.to_json())) == cfg


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "bnviz", *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=os.environ | {"PYTHONPATH": str(ROOT)})


def test_cli_list_names_the_home_experiment_first():
    out = run_cli("list")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "home"


def test_cli_runs_home_and_writes_json(tmp_path):
    target = tmp_path / "home.json"
    out = run_cli("run", "home", "--set", "steps=40", "--set", "eval_every=20", "--json", str(target))
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert set(summary) == {"no BN", "BN"}
    saved = json.loads(target.read_text())
    assert saved["config"]["steps"] == 40 and len(saved["result"]["runs"]) == 2
    # the saved config reproduces the run exactly
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(saved["config"]))
    again = run_cli("run", "home", "--config", str(config_file), "--no-cache")
    assert json.loads(again.stdout)["BN"]["final_test_acc"] == summary["BN"]["final_test_acc"]


def test_cli_rejects_bad_settings_with_a_message():
    out = run_cli("run", "home", "--set", "steps=-5")
    assert out.returncode == 2 and "steps" in out.stderr and "Traceback" not in out.stderr
