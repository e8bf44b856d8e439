"""The `workbench` command. Study options come from the studies' dials, so a new study needs no change here."""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path

from .errors import ConfigError, RunNotFound, StoreError, require
from .studies import get as get_study, names as study_names
from .stats import over as over_seeds
from .studies.base import coerce, describe

REPO = Path(__file__).resolve().parents[1]


def _table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else v


def _run_json(run) -> dict:
    m = run.meta
    out = {k: m.get(k) for k in ("id", "study", "status", "params", "created", "finished", "wall_s", "device",
                                 "error", "step", "tags")}
    out["path"] = str(run.path)
    try:
        out["summary"] = run.summary()
    except (RunNotFound, OSError):
        out["summary"] = None
    return out


def _print_run(run, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_run_json(run), indent=2, default=str))
        return
    m = run.meta
    print(f"run {run.id}  study {run.study}  status {run.status}"
          + (f" at step {run.step}" if run.status == "diverged" else "")
          + (f"  ({m.get('wall_s')} s on {m.get('device')})" if m.get("wall_s") is not None else ""))
    if run.error:
        print(f"error: {run.error}")
    print("dials: " + ", ".join(f"{k}={v}" for k, v in sorted(run.config.items())))
    print(f"file:  {run.path}")
    if run.attempt:
        print(f"attempt {run.attempt}: kept beside the run's result (workbench show {run.id} shows the result)")
    attempts = [] if run.attempt else _store_of(run).attempts(run.id)
    if attempts:
        print("attempts kept beside it: " + ", ".join(f"{a['attempt']}: {a['status']} {a['finished']}"
                                                       for a in attempts))
    summary = run.summary()
    if summary:
        print()
        print(_table([[k, _fmt(s["final"]), _fmt(s["best"]), s["best_at"]] for k, s in summary.items()],
                     ["metric", "final", "best", "best at"]))


def _store_of(run):
    from .runs import Store

    return run._store or Store()


# -- commands ---------------------------------------------------------------------------------------------------
def cmd_catalog(args) -> int:
    """rebuild: a new catalog from the run files; check: every stored file against its size and checksum."""
    from .runs import Store

    store = Store()
    if args.action == "rebuild":
        counts = store.rebuild(old="replaced")
        print(f"catalog rebuilt from the files in {store.root}: {counts['runs']} runs, {counts['attempts']} "
              f"attempts (the old catalog kept as catalog.sqlite.replaced-*)" + (f", {len(counts['unreadable'])} unreadable files:" if counts["unreadable"] else ""))
        for line in counts["unreadable"]:
            print(f"  {line}")
        return 1 if counts["unreadable"] else 0
    rows = store.list()
    bad = [(r, problem) for r in rows if (problem := store.check(r))]
    for r, problem in bad:
        print(f"{r['id']} ({r['study']}, {r['status']}): {problem}")
    print(f"{len(rows)} runs checked, {len(bad)} damaged or missing" +
          (": their results are not used; run them again (or restore the files)" if bad else ""))
    return 1 if bad else 0


def cmd_list(args) -> int:
    from .studies import broken

    rows = []
    for key in study_names():
        cls = get_study(key)
        rows.append({"study": key, "title": cls.title, "dials": list(cls.dials()), "paper": cls.paper,
                     "module": cls.__module__})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_table([[r["study"], r["title"], "" if r["module"].startswith("workbench.") else r["module"]]
                      for r in rows], ["study", "title", "from"]))
    for name, why in broken.items():
        print(f"workbench: the study plugin {name!r} did not load: {why}", file=sys.stderr)
    return 0


def read_config(path: str, cls, extra: tuple[str, ...] = ()) -> dict:
    """A config file's values: a YAML or JSON mapping of dial names to values (and, for a sweep, `grid`, `seeds`,
    `preset`), each checked as the dial checks it, before any work; an error names the key and the file."""
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError("config", path, "a YAML or JSON file that exists")
    try:
        data = json.loads(p.read_text()) if p.suffix.lower() == ".json" else yaml.safe_load(p.read_text())
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError("config", path, f"a YAML or JSON mapping of dial names to values ({first})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError("config", path, f"a mapping of dial names to values (the file holds a "
                                          f"{type(data).__name__})")
    dials = cls.dials()
    out = {}
    for key, value in data.items():
        where = f"{key} (in {p.name})"
        if key in extra:
            out[key] = value
        elif key not in dials:
            from difflib import get_close_matches

            near = get_close_matches(str(key), list(dials) + list(extra), n=1)
            raise ConfigError(where, value, (f"did you mean {near[0]}? " if near else "")
                              + f"a dial of study {cls.key!r}: {', '.join(sorted(dials))}"
                              + (f"; or {', '.join(extra)}" if extra else ""))
        else:
            out[key] = coerce(dials[key], where, value)
    if "grid" in out:
        grid = out["grid"]
        if not isinstance(grid, dict):
            raise ConfigError(f"grid (in {p.name})", grid, "a mapping of dial names to lists of values")
        for key, values in grid.items():
            if key not in dials:
                raise ConfigError(f"grid.{key} (in {p.name})", values, f"a dial of study {cls.key!r}")
            for v in values if isinstance(values, list) else [values]:
                coerce(dials[key], f"grid.{key} (in {p.name})", v)
    return out


def _dials_given(args, cls, config: dict) -> dict:
    """The config file's dial values, then the command line's on top (the command line wins)."""
    dials = {n: v for n, v in config.items() if n in cls.dials()}
    dials.update({n: getattr(args, n) for n in cls.dials() if getattr(args, n, None) is not None})
    return dials


def cmd_run(args) -> int:
    from .runs import run

    cls = get_study(args.study)
    dials = _dials_given(args, cls, read_config(args.config, cls) if args.config else {})
    result = run(args.study, force=args.force, device=args.device, progress=not (args.quiet or args.json),
                 tags=args.tag or (), scheduler=args.scheduler, **dials)
    _print_run(result, args.json)
    return {"done": 0, "diverged": 0, "cancelled": 130, "failed": 1}[result.status]


def parse_seeds(text: str) -> list[int]:
    """'3' -> [0, 1, 2]; '0,5,7' -> [0, 5, 7]."""
    try:
        if "," in text:
            return [int(v) for v in text.split(",") if v.strip()]
        n = int(text)
    except ValueError:
        raise ConfigError("seeds", text, "a count (3 -> seeds 0, 1, 2) or a comma-separated list of seeds") from None
    if n < 1:
        raise ConfigError("seeds", text, "a count of at least 1")
    return list(range(n))


def cmd_sweep(args) -> int:
    from .runs import sweep
    from .runs.sweep import parse_values

    cls = get_study(args.study)
    config = read_config(args.config, cls, extra=("grid", "seeds", "preset")) if args.config else {}
    grid = {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in config.get("grid", {}).items()}
    from_file = set(grid)
    for spec in args.grid or []:
        name, sep, values = spec.partition("=")
        if not sep:
            raise ConfigError("grid", spec, "NAME=START:STOP:COUNT or NAME=V1,V2,...")
        name = name.strip().replace("-", "_")
        if name in from_file:  # the command line's values replace the file's
            from_file.discard(name)
            del grid[name]
        if name in grid:
            raise ConfigError("grid", spec, f"{name} once (it is already --grid {name}=...): give all its values in "
                                            f"one, e.g. --grid {name}=8,16")
        grid[name] = parse_values(values)
    dials = _dials_given(args, cls, config)
    seeds = args.seeds if args.seeds is not None else config.get("seeds")
    if isinstance(seeds, list):
        seeds = ",".join(str(v) for v in seeds)
    seeds = parse_seeds(str(seeds)) if seeds is not None else None
    result = sweep(args.study, grid or None, seeds, preset=args.preset or config.get("preset"), force=args.force,
                   device=args.device,
                   executor="dask" if (args.dask or args.scheduler) else "local", scheduler=args.scheduler,
                   progress=not (args.quiet or args.json), tags=args.tag or (), **dials)
    metric = cls.headline
    if args.json:
        out = {k: result.meta.get(k) for k in ("id", "study", "kind", "status", "params", "wall_s", "error")}
        out["path"] = str(result.path)
        if metric in result.ds:
            final = result.ds[metric].isel({cls.axis: -1})
            out[f"final_{metric}"] = {"dims": list(final.dims), "values": final.values.tolist()}
        print(json.dumps(out, indent=2, default=str))
    else:
        print(f"sweep {result.id}  study {result.study}  status {result.status}  ({result.meta.get('wall_s')} s)")
        if result.error:
            print(f"error: {result.error}")
        print(f"file:  {result.path}")
        if metric in result.ds:
            final = result.ds[metric].isel({cls.axis: -1})
            table = over_seeds(final, "seed").to_dataframe()
            print(f"\nfinal {cls.label(metric)}: mean ± sd over seeds, with the 95% interval of the mean")
            rows = [[*(idx if isinstance(idx, tuple) else (idx,)), f"{r['mean']:.4g}", f"{r['std']:.2g}",
                     f"[{r['lo']:.4g}, {r['hi']:.4g}]", int(r["n"])] for idx, r in table.iterrows()]
            print(_table(rows, [*table.index.names, "mean", "sd", "95% CI", "n"]))
    return {"done": 0, "cancelled": 130, "failed": 1}.get(result.status, 1)


def cmd_dials(args) -> int:
    """A study's dials: a table (name, default, what is allowed, meaning), --json, or --schema (JSON Schema)."""
    cls = get_study(args.study)
    if args.schema:
        print(json.dumps(cls.json_schema(), indent=2, ensure_ascii=False))
        return 0
    rows = [{"dial": n, "default": p.default, "allowed": describe(p), "doc": p.doc or ""}
            for n, p in cls.dials().items()]
    if args.json:
        print(json.dumps(rows, indent=2, default=str, ensure_ascii=False))
    else:
        print(_table([[r["dial"], r["default"], r["allowed"], r["doc"]] for r in rows],
                     ["dial", "default", "allowed", "meaning"]))
    return 0


def cmd_runs(args) -> int:
    from .runs import Store
    from .runs.run import made_by_current_code

    if args.study:
        get_study(args.study)
    rows = Store().list(study=args.study, status=args.status, limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no runs yet: try `workbench run label_noise --epochs 30`")
        return 0
    def changed(r):  # the dials set away from their defaults
        params = get_study(r["study"]).changed(r["params"]) if r["study"] in study_names() else r["params"]
        return " ".join(f"{k}={v}" for k, v in params.items())

    def dials(r):
        if r.get("kind") == "sweep":
            return "grid " + " ".join(f"{k}={len(v)}" for k, v in r["params"]["grid"].items()) + \
                f" seeds={len(r['params']['seeds'])}"
        return changed(r)

    print(_table([[r["id"], r["study"], r.get("kind", "run"),
                   r["status"] + (f"@{r['step']}" if r["status"] == "diverged" else ""),
                   r["finished"], r["wall_s"], "current" if made_by_current_code(r) else "other", dials(r)]
                  for r in rows],
                 ["id", "study", "kind", "status", "finished", "wall_s", "code", "dials (not default)"]))
    if not all(made_by_current_code(r) for r in rows):
        print("\ncode 'other': computed by another version of its study's code (kept, readable; a new run of the "
              "same dials computes afresh)")
    return 0


def cmd_show(args) -> int:
    from .runs import Sweep, load

    run = load(args.run_id)
    if isinstance(run, Sweep):
        if args.json:
            print(json.dumps({**run.meta, "path": str(run.path)}, indent=2, default=str))
        else:
            print(f"{run!r}\nfile:  {run.path}\n")
            print(run.ds)
        return 0
    _print_run(run, args.json)
    return 0


def parse_space(specs: list[str]) -> dict:
    """--space NAME (its range from the dial), NAME=LOW:HIGH[:log] (a range) or NAME=A,B,... (choices)."""
    space: dict = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip().replace("-", "_")
        if name in space:
            raise ConfigError("space", spec, f"{name} once")
        if not sep:
            space[name] = None
        elif ":" in values and "," not in values:
            parts = values.split(":")
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("log", "linear")):
                raise ConfigError("space", spec, "NAME, NAME=LOW:HIGH, NAME=LOW:HIGH:log or NAME=A,B,...")
            space[name] = tuple(parts)
        else:
            space[name] = [v.strip() for v in values.split(",") if v.strip()]
    return space


def cmd_tune(args) -> int:
    from . import tune

    optuna = tune.require_optuna()
    cls = get_study(args.study)
    config = read_config(args.config, cls, extra=("space", "trials", "batch", "seeds")) if args.config else {}
    space = parse_space(args.space) if args.space else config.get("space")
    if isinstance(space, list):  # a config file's ["lr", "flip_rate=0:0.6", ...]
        space = parse_space([str(v) for v in space])
    elif isinstance(space, dict):  # {lr: null, flip_rate: "0:0.6", loss: [ce, elr]}
        space = {k: parse_space([f"{k}={v}"])[k] if isinstance(v, str) else v for k, v in space.items()}
    if not space:
        raise ConfigError("space", None, "at least one --space NAME (or a config file's `space`)")
    dials = _dials_given(args, cls, config)
    seeds = parse_seeds(str(args.seeds)) if args.seeds is not None else [0]
    sampler = optuna.samplers.TPESampler(seed=args.sampler_seed)
    if not (args.verbose or args.json):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "maximize" if cls.better(args.metric or cls.headline) == "max" else "minimize"
    ostudy = optuna.create_study(storage=args.storage, study_name=args.study_name or f"workbench-{args.study}",
                                 load_if_exists=bool(args.storage), direction=direction, sampler=sampler)
    ostudy = tune.optimize(args.study, space, args.trials if args.trials is not None else config.get("trials", 16),
                           metric=args.metric, reduce=args.reduce, seeds=seeds, device=args.device,
                           batch=args.batch if args.batch is not None else config.get("batch", 8),
                           optuna_study=ostudy, progress=not (args.quiet or args.json), **dials)
    trials = sorted((t for t in ostudy.trials if t.value is not None), key=lambda t: t.value,
                    reverse=direction == "maximize")
    if args.json:
        print(json.dumps({"best_value": ostudy.best_value if trials else None,
                          "best_params": ostudy.best_params if trials else None,
                          "trials": [{"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
                                      "runs": t.user_attrs.get("runs", []), "error": t.user_attrs.get("error")}
                                     for t in ostudy.trials]}, indent=2, default=str))
        return 0
    metric = args.metric or cls.headline
    names = list(ostudy.trials[0].params) if ostudy.trials else []
    rows = [[t.number, *(_fmt(t.params.get(n)) for n in names), _fmt(t.value), ",".join(t.user_attrs.get("runs", []))]
            for t in trials[:args.show]]
    print(_table(rows, ["trial", *names, f"{metric} ({args.reduce})", "runs"]))
    failed = [t for t in ostudy.trials if t.value is None]
    if failed:
        print(f"{len(failed)} trial(s) failed (diverged, or dials refused): "
              + "; ".join(f"#{t.number} {t.user_attrs.get('error') or ','.join(t.user_attrs.get('statuses', []))}"
                          for t in failed[:5]))
    if trials:
        print(f"best: {metric} = {_fmt(ostudy.best_value)} with "
              + " ".join(f"--{k.replace('_', '-')} {_fmt(v)}" for k, v in ostudy.best_params.items()))
    return 0


def cmd_notebook_run(args) -> int:
    pm = require("papermill", "notebooks", "notebook")

    from .runs import default_root

    cls = get_study(args.study)
    src = REPO / "notebooks" / f"{cls.notebook_name()}.ipynb"
    params = dict(args.parameter or [])
    cfg = cls.configure(**params)  # bad parameters fail here, before a kernel starts
    values = {k: v for k, v in cfg.config().items() if k in params}
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.output) if args.output else default_root() / "reports" / f"{args.study}-{stamp}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not src.is_file():  # a study of another package (or one new here): its notebook follows from its class
        import nbformat

        from .notebooks import study_notebook

        src = default_root() / "notebooks" / f"{cls.notebook_name()}.ipynb"
        src.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(study_notebook(args.study), src)
    kernel = ensure_kernel(args.kernel)
    print(f"running {src.name} with {values or 'its defaults'} on kernel {kernel!r}", file=sys.stderr)
    try:
        pm.execute_notebook(str(src), str(out), parameters=values, kernel_name=kernel, cwd=str(REPO),
                            progress_bar=not args.quiet, execution_timeout=args.timeout)
    except pm.PapermillExecutionError as e:
        print(f"workbench: notebook failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
              f"the executed notebook, with the error, is at {out}", file=sys.stderr)
        return 1
    print(out)
    return 0


def cmd_notebook_sync(args) -> int:
    """Rewrite the parameters cell of every study notebook from the study's dials; write missing notebooks."""
    from . import notebooks

    for line in notebooks.sync(REPO / "notebooks"):
        print(line)
    from . import reproduce

    for path in reproduce.write_notebooks(REPO / "notebooks" / "reproduce"):
        print(f"{path.relative_to(REPO)}: written")
    return 0


def cmd_reproduce(args) -> int:
    """Run every reproduction notebook with papermill; write data/reports/index.html."""
    require("papermill", "notebooks", "reproduce")
    from . import reproduce
    from .runs import default_root

    keys = [k.strip() for k in args.only.split(",") if k.strip()] if args.only else None
    out = Path(args.output) if args.output else default_root() / "reports"
    said = reproduce.expected(out, keys, args.profile)
    if said and not args.quiet:
        print(said, file=sys.stderr)
    started = time.perf_counter()
    results, index = reproduce.run_all(args.profile, out, REPO / "notebooks" / "reproduce", ensure_kernel(args.kernel),
                                       keys, timeout=args.timeout, progress=not args.quiet, jobs=args.jobs)
    wall = time.perf_counter() - started
    for r in results:
        effect = "" if r.get("effect") is None else f"  effect {reproduce.effect_text(r)} ({r['effect_label']})"
        print(f"{r['status']:>7}  {r['key']}{effect}")
    print(f"{index} ({len(results)} claim{'s' * (len(results) != 1)} in {wall / 60:.1f} min)")
    if args.readme:
        kept = reproduce.stored(out)
        if reproduce.write_readme(REPO / "README.md", reproduce.readme_results(results, args.profile, kept), kept):
            print(f"{REPO / 'README.md'}: the claims and profiles tables updated")
    bad = ("error", "fail") if args.strict else ("error",)  # "not reproduced here" is a result, not an error
    return 1 if any(r["status"] in bad for r in results) else 0


def ensure_kernel(name: str) -> str:
    """The Jupyter kernel to run notebooks on, running this Python: installed (user-wide) if it is missing or if it
    points at another interpreter (another checkout's environment, say)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        current = KernelSpecManager().get_kernel_spec(name).argv[0]
    except NoSuchKernel:
        current = None
    if current != sys.executable:
        from ipykernel.kernelspec import install

        install(user=True, kernel_name=name, display_name=f"Python ({name})")
    return name


APP = '''"""{title} page, written by `workbench serve` for a study without a file in apps/."""
import panel as pn

from workbench.viz.page import study_page

pn.extension("tabulator", "filedropper", notifications=False)  # filedropper: the upload box of a file dial
study_page({study!r}).servable(title="Noise Workbench · {title}")
'''


def app_files(folder) -> list[str]:
    """apps/*.py, plus a page written to `folder` for every study without a file there: a new study in
    workbench/studies is served (and linked from the index) with no change to apps/."""
    files = sorted((REPO / "apps").glob("*.py"))
    have = {p.stem for p in files}
    for name in study_names():
        if name not in have:
            path = Path(folder) / f"{name}.py"
            path.write_text(APP.format(study=name, title=name.replace("_", " ")))
            files.append(path)
    return [str(p) for p in files]


def serve_mode(address: str, shared: bool, single_user: bool) -> str | None:
    """WORKBENCH_SHARED for the server (viz/owners.py): "1" with --shared or on an address other machines reach,
    "0" with --single-user; None: left to each page (shared for a signed-in visitor or one from another machine)."""
    if shared and single_user:
        raise ConfigError("serve", "--shared --single-user", "one of the two")
    if shared:
        return "1"
    if single_user:
        return "0"
    import ipaddress
    import socket

    try:
        local = all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(address, None))
    except (OSError, ValueError):
        local = False
    return None if local else "1"


def cmd_serve(args, extra: list[str]) -> int:
    import tempfile

    require("panel", "dashboard", "serve")
    apps = app_files(tempfile.mkdtemp(prefix="workbench-apps-"))
    origin = [f"--allow-websocket-origin={h}:{args.port}" for h in ("localhost", "127.0.0.1")]
    cmd = [sys.executable, "-m", "panel", "serve", *apps, "--address", args.address, "--port", str(args.port),
           "--index", "index", *origin, *extra]
    if args.show:
        cmd.append("--show")
    mode = serve_mode(args.address, args.shared, args.single_user)
    if mode is not None:
        os.environ["WORKBENCH_SHARED"] = mode
    if args.scheduler and args.dask:
        raise ConfigError("--dask", "with --scheduler", "one of them: --scheduler ADDRESS for a running cluster, "
                                                         "--dask for a new one on this machine")
    if args.scheduler:
        from .runs.remote import scheduler_address

        os.environ["DASK_SCHEDULER_ADDRESS"] = scheduler_address(args.scheduler)
    elif args.dask:
        os.environ["WORKBENCH_DASK"] = "local"
    print(("WORKBENCH_SHARED=" + mode + " " if mode else "") + " ".join(cmd), file=sys.stderr)
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover


def cmd_export(args) -> int:
    from .exporters import export

    path = export(args.run_id, args.to, args.dest)
    print(f"{args.run_id} -> {path}")
    return 0


def cmd_cluster(args) -> int:
    from .runs.cluster import LocalProcesses

    with LocalProcesses(workers=args.workers, port=args.port, dashboard_port=args.dashboard_port) as cluster:
        print(f"Dask scheduler at {cluster.address} ({cluster.describe()}); dashboard "
              f"http://127.0.0.1:{args.dashboard_port}/status\n"
              f"  workbench serve --scheduler {cluster.address}\n"
              f"  workbench sweep STUDY --scheduler {cluster.address} ...\n"
              f"  DASK_SCHEDULER_ADDRESS={cluster.address} python ...   # wb.run / wb.sweep go there\n"
              "Ctrl-C stops the scheduler and its workers.", flush=True)
        try:
            cluster.wait()
        except KeyboardInterrupt:
            pass
    return 0


# -- parser -----------------------------------------------------------------------------------------------------
def _param_pair(text):
    if "=" in text:
        return tuple(text.split("=", 1))
    raise argparse.ArgumentTypeError("expected NAME VALUE or NAME=VALUE")


def _add_dials(parser, cls, skip=()) -> None:
    for name, par in cls.dials().items():
        if name not in skip:
            parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None, metavar="V",
                                help=f"{par.doc} Allowed: {describe(par)}. Default: {par.default}.")


def _add_run_options(parser, what: str) -> None:
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="dial values from a YAML or JSON file (a mapping of dial names to values; `workbench "
                             "dials STUDY --schema` is its JSON Schema; a sweep's may also hold grid, seeds and preset); options given here win")
    parser.add_argument("--force", action="store_true", help=f"recompute {what} even if the same config is stored")
    parser.add_argument("--device", default=None, help="auto (default: CUDA, then MPS, then CPU), cpu, cuda, ...")
    parser.add_argument("--tag", action="append", help=f"tag {what} (repeatable)")
    parser.add_argument("--json", action="store_true", help="machine-readable output (no progress bar)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


class _Parser(argparse.ArgumentParser):
    """No abbreviated options: `sweep --seed 3` must not be read as `--seeds 3`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def _per_study(sub, command: str, about: str, description):
    """`workbench COMMAND STUDY ...`: a subcommand with a parser per study; yields (parser, study class)."""
    s = sub.add_parser(command, help=about)
    studies_sub = s.add_subparsers(dest="study", required=True, metavar="STUDY", parser_class=_Parser)
    for key in study_names():
        cls = get_study(key)
        yield studies_sub.add_parser(key, help=cls.title, description=description(cls)), cls


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="workbench", description="Noise Workbench: how noise shapes learning.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("list", help="the studies")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_list)

    for sp, cls in _per_study(sub, "run", "run a study once (results are cached by config)",
                              lambda cls: f"{cls.title}. {cls.question}"):
        _add_dials(sp, cls)
        sp.add_argument("--scheduler", default=None,
                        help="train it as a task on this Dask scheduler (default: $DASK_SCHEDULER_ADDRESS if set, "
                             "else here); the records still stream here and only this process writes the store")
        _add_run_options(sp, "the run")
        sp.set_defaults(func=cmd_run)

    for sp, cls in _per_study(sub, "sweep", "a grid over dials x seeds, trained as ensembles; resumable; Dask if asked",
                              lambda cls: f"Sweep: {cls.title}. Dials not in a --grid are fixed at the value given "
                                          "(or their default)."):
        sp.add_argument("--grid", action="append", metavar="NAME=VALUES",
                        help="a swept dial: NAME=START:STOP:COUNT or NAME=V1,V2,... (repeatable)")
        sp.add_argument("--seeds", default=None, help="a count (3 -> seeds 0,1,2) or a list (0,5,7); default 1")
        sp.add_argument("--preset", default=None, choices=list(cls.presets) or None,
                        help="a named sweep of this study (its grid, seeds and dials; options given here win)")
        _add_dials(sp, cls, skip=("seed",))
        sp.add_argument("--dask", action="store_true", help="run the tasks on a Dask LocalCluster")
        sp.add_argument("--scheduler", default=None,
                        help="address of an existing Dask scheduler (default: $DASK_SCHEDULER_ADDRESS with --dask)")
        _add_run_options(sp, "the sweep")
        sp.set_defaults(func=cmd_sweep)

    for sp, cls in _per_study(sub, "tune", "an Optuna search over dials; trials that differ in batchable dials "
                                           "train together ([tune] extra)",
                              lambda cls: f"Tune: {cls.title}. Dials not in a --space are fixed at the value given "
                                          "(or their default)."):
        sp.add_argument("--space", action="append", metavar="NAME[=LOW:HIGH[:log] | =A,B,...]",
                        help="a searched dial: its range from the dial, a range of your own, or choices (repeatable)")
        sp.add_argument("--trials", type=int, default=None, help="trials to run (default 16)")
        sp.add_argument("--batch", type=int, default=None, help="trials asked and trained together (default 8)")
        sp.add_argument("--seeds", default=None, help="each trial on these seeds, its value their mean: a count (3) "
                                                      "or a list (0,5,7); default 0")
        sp.add_argument("--metric", default=None, choices=[m.name for m in cls.metrics if m.better != "none"],
                        help=f"what to optimise, in its declared direction (default {cls.headline})")
        sp.add_argument("--reduce", default="final", choices=["final", "best", "mean"],
                        help="the metric over the run's axis: final value, best value or mean (default final)")
        sp.add_argument("--sampler-seed", type=int, default=None, help="seed of Optuna's TPE sampler")
        sp.add_argument("--storage", default=None, help="an Optuna storage URL (sqlite:///optuna.db): the search is "
                                                        "kept there and continues where it stopped")
        sp.add_argument("--study-name", default=None, help="the Optuna study's name (default workbench-STUDY)")
        sp.add_argument("--show", type=int, default=10, help="trials listed, best first (default 10)")
        sp.add_argument("--verbose", action="store_true", help="Optuna's own log lines")
        _add_dials(sp, cls, skip=("seed",))
        sp.add_argument("--config", default=None, metavar="FILE", help="dial values (and space, trials, batch, "
                                                                       "seeds) from a YAML or JSON file")
        sp.add_argument("--device", default=None, help="auto (default), cpu, cuda, ...")
        sp.add_argument("--json", action="store_true", help="machine-readable output (no progress bar)")
        sp.add_argument("--quiet", action="store_true", help="no progress bar")
        sp.set_defaults(func=cmd_tune)

    s = sub.add_parser("dials", help="a study's dials: defaults, what is allowed, meaning (or their JSON Schema)")
    s.add_argument("study", choices=study_names())
    s.add_argument("--schema", action="store_true", help="the dials as a JSON Schema (for editors and config files)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_dials)

    s = sub.add_parser("runs", help="the catalog of stored runs")
    s.add_argument("--study")
    s.add_argument("--status")
    s.add_argument("--limit", type=int)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_runs)

    s = sub.add_parser("catalog", help="the catalog itself: rebuild it from the run files, or check every file")
    s.add_argument("action", choices=["rebuild", "check"],
                   help="rebuild: a new catalog from the files (the old one kept aside); check: sizes and checksums")
    s.set_defaults(func=cmd_catalog)

    s = sub.add_parser("show", help="one stored run: dials, status, final and best metrics")
    s.add_argument("run_id")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)

    s = sub.add_parser("notebook", help="run a study's parameterised notebook with papermill")
    nsub = s.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser)
    nr = nsub.add_parser("run", help="execute notebooks/STUDY.ipynb; the executed copy lands in data/reports/")
    nr.add_argument("study")
    nr.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                    help="a dial value (repeatable), e.g. -p flip_rate 0.4")
    nr.add_argument("--output", help="where to write the executed notebook")
    nr.add_argument("--kernel", default="workbench", help="Jupyter kernel name (installed if missing)")
    nr.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    nr.add_argument("--quiet", action="store_true")
    nr.set_defaults(func=cmd_notebook_run)
    ns = nsub.add_parser("sync", help="rewrite each study notebook's parameters cell from the study's dials")
    ns.set_defaults(func=cmd_notebook_sync)

    s = sub.add_parser("reproduce", help="run the reproduction notebooks; write data/reports/index.html")
    s.add_argument("--profile", choices=["quick", "full"], default="quick",
                   help="quick: small, the long claims left out (11 min on 2 CPU cores with --jobs 2); "
                        "full: every claim, longer runs, more seeds (about 2 h on 2 CPU cores with --jobs 2, "
                        "resolution_shift aside: about 67 h on 2 CPU cores, a GPU job)")
    s.add_argument("--only", help="comma-separated claims (default: all)")
    s.add_argument("--output", help="report folder (default: data/reports)")
    s.add_argument("--kernel", default="workbench", help="Jupyter kernel name (installed if missing)")
    s.add_argument("--timeout", type=int, default=3600, help="seconds a notebook cell may run")
    s.add_argument("--jobs", type=int, default=1,
                   help="claims run at a time, each in a kernel of its own with an equal share of the cores "
                        "(default 1: one after another in one kernel)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--strict", action="store_true", help="exit 1 when a finding is not reproduced (not only on errors)")
    s.add_argument("--readme", action="store_true",
                   help="write the results' rows of the claims table in README.md (the other rows are kept), and "
                        "its table of both profiles' verdicts and times from every result the report folder holds")
    s.set_defaults(func=cmd_reproduce)
    s = sub.add_parser("serve", help="the dashboard (panel serve apps/*.py), bound to localhost; "
                                     "extra options such as --basic-auth are passed to panel")
    s.add_argument("--port", type=int, default=5006)
    s.add_argument("--address", default="localhost")
    s.add_argument("--show", action="store_true", help="open a browser")
    s.add_argument("--shared", action="store_true",
                   help="a shared server: a page cancels, deletes and tags only its own jobs and runs (the default "
                        "on an address other machines reach, and for signed-in visitors)")
    s.add_argument("--single-user", action="store_true",
                   help="every page may cancel, delete and tag anything (the default on localhost)")
    s.add_argument("--scheduler", default=None,
                   help="run every job as a task on this Dask scheduler (default: $DASK_SCHEDULER_ADDRESS if set, "
                        "else in threads of the server)")
    s.add_argument("--dask", action="store_true",
                   help="run every job on a Dask cluster the server starts on this machine (loopback only)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("export", help="a stored run or sweep out to parquet, zarr, TensorBoard or MLflow (the [export] extra)")
    s.add_argument("run_id")
    s.add_argument("--to", required=True, choices=["parquet", "zarr", "tensorboard", "mlflow"],
                   help="parquet: a long table (dims, metric, value); zarr: the dataset; tensorboard: event files, a "
                        "folder per series, dials as hparams; mlflow: a file store DEST/mlruns, a run per series")
    s.add_argument("dest", help="the folder to write into")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("cluster", help="a Dask scheduler and workers on this machine (loopback) for jobs, until "
                                       "Ctrl-C: one worker per GPU where there are GPUs, else --workers")
    s.add_argument("--workers", type=int, default=None, help="CPU workers (default: 2, or one per GPU)")
    s.add_argument("--port", type=int, default=8786, help="the scheduler's port")
    s.add_argument("--dashboard-port", type=int, default=8787, help="the Dask dashboard's port")
    s.set_defaults(func=cmd_cluster)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "serve":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "serve":
            return cmd_serve(args, extra)
        return args.func(args)
    except ConfigError as e:
        print(f"workbench: error: {e}", file=sys.stderr)
        return 2
    except (RunNotFound, StoreError) as e:
        print(f"workbench: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
