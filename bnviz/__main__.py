"""The command line: ``python -m bnviz list | run NAME | precompute``.

A request the CLI cannot satisfy (a bad setting, a missing or malformed
``--config``, an output folder that does not exist, MNIST missing or corrupt,
a full disk) prints one ``error: ...`` line and exits 2, before any training
where it can be known before. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .errors import BnvizError

EXIT_USAGE = 2  # argparse's and the shell's convention for "the request was wrong"
EXIT_INTERRUPTED = 130  # 128 + SIGINT


def _progress_printer(name: str):
    last = [-1]

    def progress(fraction: float, message: str, partial=None):
        percent = int(fraction * 100)
        if percent // 10 != last[0] // 10:
            print(f"  {name}: {percent:3d}% {message}", file=sys.stderr, flush=True)
            last[0] = percent

    return progress


def read_config_file(path: Path, config_type):
    """The config in a JSON file (an object of settings, as the app's download writes)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BnvizError(f"--config {path}: no such file.") from None
    except IsADirectoryError:
        raise BnvizError(f"--config {path} is a folder; give a JSON file.") from None
    except UnicodeDecodeError:
        raise BnvizError(f"--config {path} is not UTF-8 text; give a JSON file.") from None
    except OSError as exc:
        raise BnvizError(f"--config {path} cannot be read ({exc.strerror}).") from None
    if not text.strip():
        raise BnvizError(f"--config {path} is empty; give a JSON object such as {config_type().to_json()}.")
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BnvizError(f"--config {path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}).") from None
    if not isinstance(values, dict):
        raise BnvizError(f"--config {path} holds a JSON {type(values).__name__ if values is not None else 'null'}, not an object of settings such as {config_type().to_json()}.")
    return config_type.from_dict(values)


def check_writable(path: Path) -> None:
    """Fail before the computation, not after it, when ``--json PATH`` cannot be written."""
    folder = path.parent
    if path.is_dir():
        raise BnvizError(f"--json {path} is a folder; give a file name.")
    if not folder.is_dir():
        raise BnvizError(f"--json {path}: the folder {folder} does not exist; create it first.")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise BnvizError(f"--json {path} cannot be written (permission denied).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnviz", description="bnviz experiments from the command line.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="name the experiments")
    run_parser = commands.add_parser("run", help="run one experiment headless and print its result")
    run_parser.add_argument("name")
    run_parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change one setting (repeatable)")
    run_parser.add_argument("--config", type=Path, help="a JSON config file (as the app's download writes)")
    run_parser.add_argument("--json", type=Path, help="write the whole result as JSON here")
    run_parser.add_argument("--no-cache", action="store_true", help="compute even if a stored result exists")
    run_parser.add_argument("--allow-heavy", action="store_true", help="lift the bound on the work of one view (bnviz.budget), for configs heavier than the app may start")
    pre = commands.add_parser("precompute", help="fill the result cache for every page's default view and presets")
    pre.add_argument("--only", action="append", default=[], help="only these experiments")
    args = parser.parse_args(argv)
    if getattr(args, "allow_heavy", False):
        from .budget import allow_heavy

        allow_heavy()

    from .train import configure_torch_threads

    configure_torch_threads()
    commands = {"list": _list, "run": _run, "precompute": _precompute}
    try:
        return commands[args.command](args)
    except BnvizError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except OSError as exc:  # a disk or file fault outside the result store (which degrades itself)
        where = f" {exc.filename}:" if exc.filename else ""
        print(f"error:{where} {exc.strerror or exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_USAGE


def _list(args) -> int:
    from .experiments import all_experiments

    experiments = all_experiments().values()
    width = max(len(e.name) for e in experiments)
    for experiment in experiments:
        print(f"{experiment.name:{width}s}  {experiment.title}")
    return 0


def _store():
    from .cache import ResultStore

    store = ResultStore()
    if store.notice:
        print(f"note: {store.notice}", file=sys.stderr)
    return store


def _run_as_job(store, name: str, config):
    """The result of ``(name, config)`` through the same jobs the app uses (bnviz.jobs):
    headless, it waits and prints the job's progress."""
    from .jobs import JobManager

    printer = _progress_printer(name)
    manager = JobManager(store)
    return manager.wait(manager.submit(name, config, owner="cli"), on_progress=lambda status: printer(status.fraction, status.message))


def _run(args) -> int:
    from .experiments import get_experiment
    from .results import to_jsonable, write_json

    experiment = get_experiment(args.name)
    config = experiment.default_config()
    if args.config:
        config = read_config_file(args.config, experiment.config_type)
    config = config.with_overrides(args.set)
    if args.json:
        check_writable(args.json)
    store = _store()
    print(f"{experiment.name}: {config.to_json()}", file=sys.stderr)
    started = time.perf_counter()
    if args.no_cache:
        result = experiment.run(config, _progress_printer(experiment.name))
        store.put(experiment.name, config, result)
    else:
        result = _run_as_job(store, experiment.name, config)
    print(f"done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    summary = experiment.summarize(result) if experiment.summarize else to_jsonable(result)
    print(json.dumps(to_jsonable(summary), indent=1))
    if args.json:
        write_json({"experiment": experiment.name, "config": config.to_dict(), "result": result}, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _precompute(args) -> int:
    from .experiments import all_experiments, get_experiment

    experiments = [get_experiment(n) for n in args.only] if args.only else list(all_experiments().values())
    store = _store()
    total_started = time.perf_counter()
    for experiment in experiments:
        for config in experiment.configs_to_precompute():
            started = time.perf_counter()
            was_stored = store.get(experiment.name, config) is not None
            _run_as_job(store, experiment.name, config)
            state = "already cached" if was_stored else f"computed in {time.perf_counter() - started:.1f} s"
            print(f"{experiment.name:24s} {state}  {config.to_json()}")
    print(f"precompute finished in {time.perf_counter() - total_started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
