"""The command line: ``python -m bnviz list | run NAME | precompute``."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .errors import BnvizError


def _progress_printer(name: str):
    last = [-1]

    def progress(fraction: float, message: str, partial=None):
        percent = int(fraction * 100)
        if percent // 10 != last[0] // 10:
            print(f"  {name}: {percent:3d}% {message}", file=sys.stderr, flush=True)
            last[0] = percent

    return progress


def _run_as_job(manager, name: str, config):
    """The result of ``(name, config)`` through the same jobs the app uses (bnviz.jobs):
    headless, it waits and prints the job's progress."""
    printer = _progress_printer(name)
    return manager.wait(manager.submit(name, config, owner="cli"), on_progress=lambda status: printer(status.fraction, status.message))


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
    pre = commands.add_parser("precompute", help="fill the result cache for every page's default view and presets")
    pre.add_argument("--only", action="append", default=[], help="only these experiments")
    args = parser.parse_args(argv)

    from .cache import ResultStore
    from .experiments import all_experiments, get_experiment
    from .jobs import JobManager
    from .results import to_jsonable, write_json
    from .train import configure_torch_threads

    configure_torch_threads()
    try:
        if args.command == "list":
            experiments = all_experiments().values()
            width = max(len(e.name) for e in experiments)
            for experiment in experiments:
                print(f"{experiment.name:{width}s}  {experiment.title}")
            return 0
        store = ResultStore()
        jobs = JobManager(store)
        if args.command == "run":
            experiment = get_experiment(args.name)
            config = experiment.default_config()
            if args.config:
                config = experiment.config_type.from_dict(json.loads(args.config.read_text()))
            config = config.with_overrides(args.set)
            print(f"{experiment.name}: {config.to_json()}", file=sys.stderr)
            started = time.perf_counter()
            if args.no_cache:
                result = experiment.run(config, _progress_printer(experiment.name))
                store.put(experiment.name, config, result)
            else:
                result = _run_as_job(jobs, experiment.name, config)
            print(f"done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            summary = experiment.summarize(result) if experiment.summarize else to_jsonable(result)
            print(json.dumps(to_jsonable(summary), indent=1))
            if args.json:
                write_json({"experiment": experiment.name, "config": config.to_dict(), "result": result}, args.json)
                print(f"wrote {args.json}", file=sys.stderr)
            return 0
        if args.command == "precompute":
            experiments = [get_experiment(n) for n in args.only] if args.only else list(all_experiments().values())
            total_started = time.perf_counter()
            for experiment in experiments:
                for config in experiment.configs_to_precompute():
                    started = time.perf_counter()
                    was_stored = store.get(experiment.name, config) is not None
                    _run_as_job(jobs, experiment.name, config)
                    state = "already cached" if was_stored else f"computed in {time.perf_counter() - started:.1f} s"
                    print(f"{experiment.name:24s} {state}  {config.to_json()}")
            print(f"precompute finished in {time.perf_counter() - total_started:.1f} s")
            return 0
    except BnvizError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
