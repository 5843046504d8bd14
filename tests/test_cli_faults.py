"""CLI faults (issue 24): every bad request prints ONE ``error: ...`` line and exits 2, no traceback.

The CLI runs in-process (``bnviz.__main__.main``), and the result store's
compute is replaced by one that fails the test: every case here must be
refused before any training starts. Two valid boundary runs (a tiny home run
at the largest seed, from a config file, written as JSON) train for real.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnviz.__main__ import main
from bnviz.cache import ResultStore
from bnviz.config import MAX_SEED

NOT_UTF8 = b'{"steps": "\xff\xfe"}'

# file name -> bytes written under the test's folder, for --config cases
CONFIG_FILES = {
    "malformed.json": b'{"steps": 40,',
    "empty.json": b"",
    "blank.json": b"  \n\t",
    "array.json": b"[1, 2]",
    "number.json": b"42",
    "null.json": b"null",
    "string.json": b'"home"',
    "latin1.json": NOT_UTF8,
    "unknown-key.json": b'{"stepz": 40}',
    "bad-type.json": b'{"steps": "many"}',
    "out-of-range.json": b'{"steps": -5}',
    "nan.json": b'{"lr": NaN}',
    "nested.json": b'{"hidden": {"a": 1}}',
}

# (argv, words the one error line must contain); {tmp} is the test's folder
CASES = [
    # --config
    (["run", "home", "--config", "{tmp}/missing.json"], "no such file"),
    (["run", "home", "--config", "{tmp}/malformed.json"], "not valid JSON"),
    (["run", "home", "--config", "{tmp}/empty.json"], "is empty"),
    (["run", "home", "--config", "{tmp}/blank.json"], "is empty"),
    (["run", "home", "--config", "{tmp}"], "is a folder"),
    (["run", "home", "--config", "{tmp}/array.json"], "JSON list, not an object"),
    (["run", "home", "--config", "{tmp}/number.json"], "JSON int, not an object"),
    (["run", "home", "--config", "{tmp}/null.json"], "JSON null, not an object"),
    (["run", "home", "--config", "{tmp}/string.json"], "JSON str, not an object"),
    (["run", "home", "--config", "{tmp}/latin1.json"], "not UTF-8"),
    (["run", "home", "--config", "{tmp}/unknown-key.json"], "Unknown setting(s) stepz"),
    (["run", "home", "--config", "{tmp}/bad-type.json"], "steps must be a whole number"),
    (["run", "home", "--config", "{tmp}/out-of-range.json"], "steps must be between 10 and 20,000"),
    (["run", "home", "--config", "{tmp}/nan.json"], "lr must be a finite number"),
    (["run", "home", "--config", "{tmp}/nested.json"], "hidden must be a whole number"),
    # seeds
    (["run", "home", "--set", "seed=1e30"], "seed must be a whole number between 0 and 4,294,967,295; got 1e+30"),
    (["run", "home", "--set", f"seed={MAX_SEED + 1}"], "between 0 and 4,294,967,295"),
    (["run", "home", "--set", "seed=-1"], "between 0 and 4,294,967,295"),
    (["run", "home", "--set", "seed=0.5"], "seed must be a whole number"),
    (["run", "home", "--set", "seed=NaN"], "seed must be a whole number"),
    # integers
    (["run", "home", "--set", "steps=inf"], "steps must be a whole number; got 'inf'"),
    (["run", "home", "--set", "steps=1e999"], "steps must be a whole number; got inf"),
    (["run", "home", "--set", "steps=abc"], "steps must be a whole number"),
    (["run", "home", "--set", "steps=true"], "steps must be a whole number"),
    (["run", "home", "--set", "steps=0"], "steps must be between 10 and 20,000"),
    (["run", "home", "--set", "steps=10000000000000"], "steps must be between"),
    (["run", "home", "--set", "batch_size=0"], "batch size must be between 1 and 60,000"),
    (["run", "home", "--set", "eval_every=0"], "eval_every must be at least 1"),
    (["run", "home", "--set", "hidden=[0]"], "Layer widths must be between 1 and 4096"),
    (["run", "home", "--set", "hidden=[-3,10]"], "Layer widths must be between 1 and 4096"),
    (["run", "home", "--set", "hidden=[]"], "Choose 1 to 6 hidden layers"),
    # floats
    (["run", "home", "--set", "lr=0"], "learning rate must be in (0, 100]"),
    (["run", "home", "--set", "lr=-1"], "learning rate must be in (0, 100]"),
    (["run", "home", "--set", "lr=1e30"], "learning rate must be in (0, 100]"),
    (["run", "home", "--set", "lr=nan"], "lr must be a finite number"),
    (["run", "home", "--set", "lr=-Infinity"], "lr must be a finite number"),
    (["run", "home", "--set", "lr=fast"], "lr must be a number"),
    # text and choices
    (["run", "home", "--set", "activation=evil"], "activation must be one of"),
    (["run", "home", "--set", "activation=[1]"], "activation must be text"),
    (["run", "home", "--set", "steps"], "--set expects key=value"),
    (["run", "home", "--set", "=5"], "Unknown setting ''"),
    (["run", "home", "--set", "stepz=5"], "Unknown setting 'stepz'"),
    # the holes of other experiments
    (["run", "small_batches", "--set", "groups=0"], "groups (GroupNorm's) must be between 1 and 64"),
    (["run", "small_batches", "--set", "groups=-4"], "between 1 and 64"),
    (["run", "norm_comparison", "--set", "groups=0"], "groups must be between 1 and 100"),
    (["run", "norm_comparison", "--set", "lr=0"], "learning rate must be in (0, 100]"),
    (["run", "few_sample_adaptation", "--set", "model=abc"], 'model must be a JSON object of ShiftConfig settings, e.g. model={"shift"'),
    (["run", "few_sample_adaptation", "--set", "model=[1]"], "model must be a JSON object"),
    (["run", "few_sample_adaptation", "--set", 'model={"shift": "bogus"}'], "shift must be one of"),
    (["run", "precise_bn", "--set", "hidden=[0]"], "Layer widths must be between 1 and 4096"),
    (["run", "why_noisy_bn", "--set", "batch_size=0"], "batch size must be between 1 and 60,000"),
    (["run", "why_probes", "--set", "eval_every=-1"], "eval_every must be at least 1"),
    (["run", "sequence_norms", "--set", "lr=0"], "learning rate must be in (0, 100]"),
    (["run", "distribution_shift", "--set", "lr=-0.1"], "learning rate must be in (0, 100]"),
    (["run", "batch_noise_regularization", "--set", "hidden=[0]"], "Layer widths must be between 1 and 4096"),
    (["run", "placement", "--set", "lrs=[0.1,NaN]"], "lrs must be a finite number"),
    # names
    (["run", "../etc/passwd"], "No experiment named '../etc/passwd'. Known: home,"),
    (["run", "os"], "No experiment named 'os'"),
    (["run", ""], "No experiment named ''"),
    (["precompute", "--only", "../x"], "No experiment named '../x'"),
    # --json
    (["run", "home", "--json", "{tmp}/no/such/folder/out.json"], "does not exist; create it first"),
    (["run", "home", "--json", "{tmp}"], "is a folder; give a file name"),
]


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run the CLI in-process on a private result store; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("BNVIZ_RESULTS_DIR", str(tmp_path / "results"))
    for name, data in CONFIG_FILES.items():
        (tmp_path / name).write_bytes(data)

    def run(argv: list[str]):
        code = main([arg.replace("{tmp}", str(tmp_path)) for arg in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the CLI started a computation for a request it should have refused")

    monkeypatch.setattr(ResultStore, "get_or_compute", refuse)
    monkeypatch.setattr(ResultStore, "put", refuse)


@pytest.mark.parametrize("argv, words", CASES, ids=[" ".join(argv) for argv, _ in CASES])
def test_a_bad_request_is_one_error_line_and_exit_2(cli, no_training, argv, words):
    code, out, err = cli(argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert words in lines[0], lines[0]
    assert "Traceback" not in err


def test_the_list_of_known_names_is_every_experiment(cli, no_training):
    from bnviz.experiments import all_experiments

    code, _, err = cli(["run", "../etc/passwd"])
    assert code == 2 and all(name in err for name in all_experiments())


def test_a_disk_fault_while_writing_is_one_error_line(cli, monkeypatch):
    """A full disk under --json (after the run): one line, exit 2, the result still printed."""
    import errno
    import os

    import bnviz.results

    def disk_full(result, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(bnviz.results, "write_json", disk_full)
    from bnviz.results import Comparison

    monkeypatch.setattr(ResultStore, "get_or_compute", lambda self, name, config, compute, on_wait=None: Comparison(runs=[]))
    code, out, err = cli(["run", "home", "--json", "{tmp}/out.json"])
    assert code == 2 and json.loads(out) is not None
    assert err.strip().splitlines()[-1].endswith("No space left on device") and "Traceback" not in err


def test_valid_boundary_values_run(cli, tmp_path):
    """The largest seed, the fewest steps, from a config file, written as JSON: a real (tiny) run."""
    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps({"steps": 10, "eval_every": 10, "seed": MAX_SEED, "hidden": [4]}))
    target = tmp_path / "out.json"
    code, out, err = cli(["run", "home", "--config", str(config_file), "--set", "lr=100", "--json", str(target)])
    assert code == 0, err
    assert set(json.loads(out)) == {"no BN", "BN"}
    saved = json.loads(Path(target).read_text())
    assert saved["config"]["seed"] == MAX_SEED and saved["config"]["lr"] == 100
