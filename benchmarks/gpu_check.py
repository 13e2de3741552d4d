"""One GPU check, one command: the CUDA tests and every speed figure of the GPU path.

    benchmarks/gpu_check.sh OUTDIR --cifar PATH/cifar10-jpg.tar.gz     # a GPU machine, < 8 min
    benchmarks/gpu_check.sh OUTDIR --cifar PATH --device cpu            # a dry run on the CPU

For a GPU machine with PyTorch, NumPy, scikit-learn, Pillow, rich, matplotlib and pytest, and
neither Ray nor network access. Nothing is installed: the check puts this checkout's `src` at
the front of PYTHONPATH (for itself and every command it runs). An editable install needs
setuptools and a writable environment, which locked-down images may lack; PYTHONPATH needs
neither and cannot pick up another installed blockqnn by mistake (the log records the path
it imported). Steps, each a separate process with its own time limit:

1. env         the machine: GPU, driver, PyTorch and Python versions, CPU count, commit
2. data        the CIFAR-10 JPEG archive (`train/<class>/*.jpg`, `test/<class>/*.jpg`)
               extracted and decoded once into the work folder's cache
3. pytest      `pytest -m cuda`: graphed training, bf16, out-of-memory retry at half batch,
               checkpoint resume on the GPU, the packing executor (tests/test_cuda.py and the
               CUDA test of tests/test_trainer.py); they skip without CUDA
4. trainer     benchmarks/trainer.py: ours against the naive DataLoader / fp32 / eager loop,
               images/s and the ratio, and the 12-epoch evaluation extrapolated
5. evaluation  one real 12-epoch early-stop evaluation of the search-time network (F = 32,
               N = 2, 45,000 training and 5,000 validation images, batch 256), end to end
6. packing     benchmarks/packing.py: 1, 2 and 4 workers on one GPU, evaluations per hour
7. search      a short real CIFAR-10 search with 2 workers packed on one GPU
8. final       `blockqnn train --recipe fast` of the search's best block on all 50,000
               training images, tested on the 10,000 test images

Every step gets its own limit, capped by what is left of `--budget-seconds` minus a floor kept
for each later step, so the whole check ends in time; a step that runs out is killed (with
its worker processes) and recorded as timed out, and the rest go on. With `--device cpu` the
sizes shrink to a dry run that exercises every step in a few minutes.

OUTDIR receives: `summary.json` (every figure, each with the device, PyTorch version and
settings), `log.txt` (every command and its whole output), one `<step>.json` per step that
prints JSON, `pytest.xml`, the search run (`search/`) and the training folder (`final/`).
The extracted images and decoded arrays go to `--work` (default OUTDIR/work) and are deleted
at the end unless `--keep-work`. Exit code: 0 every step ok, 1 a step failed or timed out,
2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
# The trainer benchmark's block: a representative 6-layer multi-branch block.
BENCH_BLOCK = "1,1,3,0,0; 2,1,5,0,0; 3,5,0,1,2; 4,2,3,0,0; 5,6,0,3,4; 6,1,1,5,0; 7,7,0,0,0"

# Sizes per profile. "gpu": the real check (targets in docs/benchmarks.md, "GPU figures");
# "cpu": a dry run, tiny everywhere, that only shows every step works.
SIZES: dict[str, dict[str, Any]] = {
    "gpu": {
        "trainer": ["--repeats", "3"],  # 200 timed steps per repeat (the benchmark's default)
        "evaluation": {"epochs": 12, "filters": 32, "blocks_per_stage": 2, "train_samples": 0},
        "packing": {"workers": "1,2,4", "epochs": 2, "budget": 12, "train_samples": 20000,
                    "filters": 32, "blocks_per_stage": 2, "repeats": 1},
        "search": {"budget": 8, "workers": 2, "gpus_per_trial": 0.5, "epochs": 3,
                   "train_samples": 20000, "filters": 32, "blocks_per_stage": 2},
        "final": {"epochs": 40, "filters": 32, "blocks_per_stage": 2, "train_samples": 0},
        "budget_seconds": 470.0,
        # step: (limit, floor kept for it while earlier steps run), seconds
        "limits": {"pytest": (150, 60), "trainer": (120, 45), "evaluation": (90, 40),
                   "packing": (150, 60), "search": (120, 45), "final": (240, 90)},
    },
    "cpu": {
        "trainer": ["--repeats", "1", "--steps", "2", "--batch-size", "32", "--compile", "off"],
        "evaluation": {"epochs": 1, "filters": 8, "blocks_per_stage": 1, "train_samples": 500},
        "packing": {"workers": "1,2", "epochs": 1, "budget": 4, "train_samples": 300,
                    "filters": 4, "blocks_per_stage": 1, "repeats": 1},
        "search": {"budget": 4, "workers": 2, "gpus_per_trial": 0.0, "epochs": 1,
                   "train_samples": 300, "filters": 4, "blocks_per_stage": 1},
        "final": {"epochs": 1, "filters": 4, "blocks_per_stage": 1, "train_samples": 300},
        "budget_seconds": 900.0,
        "limits": {"pytest": (180, 30), "trainer": (240, 30), "evaluation": (180, 30),
                   "packing": (240, 30), "search": (180, 30), "final": (180, 30)},
    },
}  # fmt: skip


class BadInput(Exception):
    """A one-line problem with the command line: exit code 2."""


@dataclass
class Check:
    out: Path
    work: Path
    device: str
    profile: str
    dataset: str  # a folder with train/ and test/, or "digits"
    deadline: float
    log: TextIO
    env: dict[str, str]
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    current: subprocess.Popen[str] | None = None

    @property
    def sizes(self) -> dict[str, Any]:
        return SIZES[self.profile]

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def run(self, name: str, argv: list[str], later: list[str]) -> dict[str, Any]:
        """Run one step's command with its time limit; its JSON output (the last line that
        parses) is saved as OUTDIR/<name>.json and returned under "result"."""
        limit, _ = self.sizes["limits"][name]
        floors = sum(self.sizes["limits"][s][1] for s in later)
        left = self.deadline - time.monotonic() - floors
        own_floor = self.sizes["limits"][name][1]
        record: dict[str, Any] = {"command": shlex.join(argv)}
        if left < own_floor:
            record.update(status="skipped", reason=f"out of time ({left:.0f} s left for it)")
            self.say(f"--- {name}: skipped, out of time")
            self.steps[name] = record
            return record
        timeout = min(float(limit), left)
        self.say(f"=== {name} (limit {timeout:.0f} s): {record['command']}")
        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env=self.env,
            start_new_session=True,  # its own group: a timeout kills its workers too
        )
        self.current = proc
        try:
            output, _ = proc.communicate(timeout=timeout)
            status = "ok" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            output, _ = proc.communicate()
            status = "timed out"
        finally:
            self.current = None
        record.update(status=status, seconds=round(time.monotonic() - t0, 2))
        record["returncode"] = proc.returncode
        self.log.write(output or "")
        self.log.write(f"--- {name}: {status} in {record['seconds']} s\n")
        self.log.flush()
        result = _last_json(output or "")
        if result is not None:
            (self.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
            record["result"] = result
        print(f"--- {name}: {status} in {record['seconds']} s", flush=True)
        self.steps[name] = record
        return record


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _last_json(text: str) -> Any:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith(("{", "[")):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    # a pretty-printed object (blockqnn search --json prints one over several lines)
    start = text.rfind("\n{")
    if start >= 0:
        try:
            return json.loads(text[start:])
        except json.JSONDecodeError:
            return None
    return None


# ----- steps run in this process ----------------------------------------------------------------


def environment(check: Check) -> dict[str, Any]:
    import torch

    import blockqnn

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu": platform.processor() or platform.machine(),
        "blockqnn": blockqnn.__version__,
        "blockqnn_path": str(Path(blockqnn.__file__).parent),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpus=torch.cuda.device_count(),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            bf16=torch.cuda.is_bf16_supported(),
        )
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,utilization.gpu",
             "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    git = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    info["commit"] = git.stdout.strip() if git.returncode == 0 else None
    return info


def prepare_data(check: Check, archive: Path | None) -> dict[str, Any]:
    """Extract the archive into the work folder and decode it once into the cache."""
    from blockqnn.data import load_arrays
    from blockqnn.settings.config import DataConfig

    if archive is None:
        return {"dataset": "digits", "note": "no --cifar: digits stands in for CIFAR-10"}
    t0 = time.monotonic()
    folder = check.work / "cifar10-jpg"
    if not (folder / "train").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
    roots = [p.parent for p in folder.rglob("train") if (p.parent / "test").is_dir()]
    if not roots:
        raise BadInput(f"--cifar {archive}: holds no train/ and test/ folders")
    root = min(roots, key=lambda p: len(p.parts))
    extracted = time.monotonic() - t0
    arrays = load_arrays(DataConfig(dataset=str(root), cache_dir=check.env["BLOCKQNN_CACHE"]))
    check.dataset = str(root)
    return {
        "dataset": str(root),
        "archive": str(archive),
        "train_images": len(arrays.x_train) + len(arrays.x_val),
        "test_images": len(arrays.x_test),
        "classes": len(arrays.classes),
        "input_shape": list(arrays.input_shape),
        "extract_seconds": round(extracted, 2),
        "decode_seconds": round(time.monotonic() - t0 - extracted, 2),
    }


# ----- the commands ---------------------------------------------------------------------------


def steps(check: Check, python: str) -> list[tuple[str, list[str]]]:
    s = check.sizes
    dev = check.device
    folder = check.dataset != "digits"
    blockqnn = [python, "-m", "blockqnn"]
    tests = [t for t in ("tests/test_cuda.py", "tests/test_trainer.py") if (ROOT / t).is_file()]
    out: list[tuple[str, list[str]]] = []
    out.append((
        "pytest",
        [python, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
         f"--junitxml={check.out / 'pytest.xml'}", *tests],
    ))  # fmt: skip
    archive = check.dataset if folder else str(check.work / "no-archive")
    out.append((
        "trainer",
        [python, "benchmarks/trainer.py", "--device", dev, "--json", "--archive", archive,
         "--cache", str(check.work / "bench"), *s["trainer"]],
    ))  # fmt: skip
    e = s["evaluation"]
    out.append((
        "evaluation",
        [*blockqnn, "evaluate", BENCH_BLOCK, "--dataset", check.dataset, "--device", dev,
         "--epochs", str(e["epochs"]), "--filters", str(e["filters"]),
         "--blocks-per-stage", str(e["blocks_per_stage"]),
         "--train-samples", str(e["train_samples"]), "--json"],
    ))  # fmt: skip
    p = s["packing"]
    out.append((
        "packing",
        [python, "benchmarks/packing.py", "--device", dev, "--dataset", check.dataset,
         "--workers", p["workers"], "--epochs", str(p["epochs"]), "--budget", str(p["budget"]),
         "--train-samples", str(p["train_samples"]), "--filters", str(p["filters"]),
         "--blocks-per-stage", str(p["blocks_per_stage"]), "--repeats", str(p["repeats"]),
         "--json"],
    ))  # fmt: skip
    q = s["search"]
    config = check.out / "search.toml"
    config.write_text(
        "[search]\n"
        f"budget = {q['budget']}\nworkers = {q['workers']}\n"
        f"gpus_per_trial = {float(q['gpus_per_trial'])}\nseed = 0\n"
        "[data]\n"
        f"dataset = {json.dumps(check.dataset)}\ntrain_samples = {q['train_samples']}\n"
        "[network]\n"
        f"filters = {q['filters']}\nblocks_per_stage = {q['blocks_per_stage']}\n"
        "[train]\n"
        f"epochs = {q['epochs']}\n"
    )
    run_dir = check.out / "search"
    out.append((
        "search",
        [*blockqnn, "search", "--config", str(config), "--run-dir", str(run_dir),
         "--device", dev, "--no-cache", "--json"],
    ))  # fmt: skip
    return out


def final_command(check: Check, python: str) -> list[str]:
    """The fast recipe on the search's best block, or on the benchmark block without one."""
    f = check.sizes["final"]
    search = check.steps.get("search", {})
    top = (search.get("result") or {}).get("top") or []
    source = [str(check.out / "search")] if top else ["--block", BENCH_BLOCK]
    return [
        python, "-m", "blockqnn", "train", *source, "--dataset", check.dataset,
        "--recipe", "fast", "--out", str(check.out / "final"), "--device", check.device,
        "--epochs", str(f["epochs"]), "--filters", str(f["filters"]),
        "--blocks-per-stage", str(f["blocks_per_stage"]),
        "--train-samples", str(f["train_samples"]), "--json",
    ]  # fmt: skip


# ----- the figures -------------------------------------------------------------------------------


def _pytest_counts(path: Path) -> dict[str, int]:
    if not path.is_file():
        return {}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {}
    keys = ("tests", "failures", "errors", "skipped")
    counts = {k: int(suite.get(k, 0)) for k in keys}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def figures(check: Check) -> dict[str, Any]:
    """The headline numbers of every step that produced them."""
    out: dict[str, Any] = {}
    r = {name: step.get("result") or {} for name, step in check.steps.items()}
    if r.get("trainer"):
        t = r["trainer"]
        out["trainer"] = {
            k: t.get(k)
            for k in ("ours_images_per_s", "baseline_images_per_s", "ratio",
                      "seconds_per_12_epoch_eval", "mode", "device", "data", "n", "steps",
                      "batch_size", "spread")
        }  # fmt: skip
    if r.get("evaluation"):
        e = r["evaluation"]
        end_to_end = sum(float(e.get(k) or 0) for k in ("build_seconds", "train_seconds",
                                                         "eval_seconds"))  # fmt: skip
        out["evaluation"] = {
            "end_to_end_seconds": round(end_to_end, 2),
            "process_seconds": check.steps["evaluation"].get("seconds"),
            **{k: e.get(k) for k in ("images_per_second", "accuracy", "mode", "device",
                                     "batch_size", "epochs", "build_seconds",
                                     "train_seconds", "eval_seconds")},
            "settings": SIZES[check.profile]["evaluation"],
        }  # fmt: skip
    if r.get("packing"):
        out["packing"] = {
            "rows": [
                {"workers": row["workers"], "evaluations_per_hour": row["steady_per_hour"],
                 "ratio_vs_1": row["ratio_vs_1"], "devices": row["devices"],
                 "modes": row["modes"]}
                for row in r["packing"].get("rows", [])
            ],
            "settings": r["packing"].get("settings"),
        }  # fmt: skip
    if r.get("search"):
        s = r["search"]
        seconds = check.steps["search"].get("seconds") or 0
        top = (s.get("top") or [{}])[0]
        out["search"] = {
            "trained": s.get("trained"),
            "failed": s.get("failed"),
            "seconds": seconds,
            "evaluations_per_hour": round((s.get("trained") or 0) / seconds * 3600, 1)
            if seconds
            else None,
            "best": {k: top.get(k) for k in ("nsc", "reward", "accuracy")},
            "settings": SIZES[check.profile]["search"],
        }
    if r.get("final"):
        f = r["final"]
        out["final"] = {
            k: f.get(k)
            for k in ("block", "test_accuracy", "test_accuracy_no_tta", "tta", "epochs",
                      "train_seconds", "images_per_second", "device", "mode", "params",
                      "flops")
        }  # fmt: skip
        out["final"]["settings"] = {"recipe": "fast", **SIZES[check.profile]["final"]}
    counts = _pytest_counts(check.out / "pytest.xml")
    if counts:
        out["pytest"] = counts
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("outdir", type=Path, help="where the JSON, the log and the runs go")
    parser.add_argument("--cifar", type=Path, help="cifar10-jpg.tar.gz (train/ and test/ JPEGs)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run)")
    parser.add_argument("--work", type=Path, help="scratch folder (default OUTDIR/work)")
    parser.add_argument("--keep-work", action="store_true", help="keep the extracted images")
    parser.add_argument("--budget-seconds", type=float, help="the whole check's time limit")
    args = parser.parse_args(argv)
    try:
        return _main(args)
    except BadInput as exc:
        print(f"gpu_check: error: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    if args.device not in ("cuda", "cpu"):
        raise BadInput(f"--device {args.device!r}: choose cuda or cpu")
    if args.cifar is not None and not (args.cifar.is_file() or args.cifar.is_dir()):
        raise BadInput(f"--cifar {args.cifar}: no such file")
    if args.cifar is not None and args.cifar.is_file() and not tarfile.is_tarfile(args.cifar):
        raise BadInput(f"--cifar {args.cifar}: not a tar archive")
    if args.outdir.exists() and any(args.outdir.iterdir()):
        raise BadInput(f"{args.outdir}: exists and is not empty (choose a new OUTDIR)")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise BadInput("no CUDA device here (use --device cpu for a dry run)")
    profile = "gpu" if args.device == "cuda" else "cpu"
    out = args.outdir.resolve()
    work = (args.work or out / "work").resolve()
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env["BLOCKQNN_CACHE"] = str(work / "cache")
    env.setdefault("PYTHONUNBUFFERED", "1")
    budget = args.budget_seconds or SIZES[profile]["budget_seconds"]
    started = time.time()
    log = (out / "log.txt").open("w")
    check = Check(out, work, args.device, profile, "digits", time.monotonic() + budget, log, env)
    summary: dict[str, Any] = {"started": started, "profile": profile, "device": args.device}
    code = 0
    try:
        summary["environment"] = environment(check)
        check.say(f"gpu_check: {json.dumps(summary['environment'])}")
        summary["data"] = prepare_data(check, args.cifar)
        check.say(f"data: {json.dumps(summary['data'])}")
        python = sys.executable
        planned = steps(check, python)
        names = [n for n, _ in planned] + ["final"]
        for i, (name, argv) in enumerate(planned):
            check.run(name, argv, later=names[i + 1 :])
        check.run("final", final_command(check, python), later=[])
    except KeyboardInterrupt:
        if check.current is not None:
            _kill_group(check.current)
        check.say("gpu_check: interrupted")
        code = 130
    finally:
        summary["steps"] = {
            name: {k: v for k, v in step.items() if k != "result"}
            for name, step in check.steps.items()
        }
        summary["figures"] = figures(check)
        summary["seconds"] = round(time.time() - started, 1)
        summary["settings"] = {k: v for k, v in SIZES[profile].items() if k != "limits"}
        summary["budget_seconds"] = budget
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        _print_summary(check, summary)
        log.close()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    if code:
        return code
    bad = [n for n, s in check.steps.items() if s["status"] != "ok"]
    return 1 if bad else 0


def _print_summary(check: Check, summary: dict[str, Any]) -> None:
    env = summary.get("environment", {})
    where = env.get("gpu") or f"CPU ({env.get('cpu')}, {env.get('cpus')} cores)"
    check.say(
        f"\nsummary: {where}, torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), "
        f"profile {summary['profile']}, {summary['seconds']} s in all; data: "
        f"{summary.get('data', {}).get('dataset')}"
    )
    for name, step in summary["steps"].items():
        check.say(f"  {name:<11} {step['status']:<10} {step.get('seconds', '-')} s")
    check.say(json.dumps(summary["figures"], indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
