"""Run part of Scrapy's own test suite stock and with scrapy-gateway on, and list what the gateway breaks.

    bash scripts/dev scrapy-suite [--modes stock,addon,downloader] [--timeout 60] [-- PYTEST_ARGS...]

It downloads the sdist of the *installed* Scrapy version into .venv/scrapy-suite/ (once), unpacks
it without its scrapy/ package (so the tests import the installed Scrapy), installs Scrapy's test
requirements from its tox.ini into the project's .venv (once), then runs the crawl, engine,
downloader, scheduler, throttle and closespider test files once per mode:

- stock:      Scrapy as it is;
- addon:      every Crawler gets ADDONS = {"scrapy_gateway.Addon": 0};
- downloader: every Crawler gets DOWNLOADER = "scrapy_gateway.GatewayDownloader" alone.

(see scripts/scrapy_suite_plugin.py). It prints and writes to .venv/scrapy-suite/report.txt the
pass/fail counts of each mode and the tests that fail with the gateway but pass stock.
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import scrapy

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
CACHE = ROOT / ".venv" / "scrapy-suite"
MODES = ("stock", "addon", "downloader")

# The crawl, engine, downloader, scheduler, throttle and closespider files of tests/.
FILES = (
    "test_crawl.py",
    "test_engine*.py",
    "test_downloader*.py",
    "test_core_downloader*.py",
    "test_scheduler*.py",
    "test_extension_throttle.py",
    "test_closespider.py",
)

# From Scrapy's [test-requirements]: not needed to run these files (coverage, parallel runs, doc
# tests). pytest-timeout stays: a hung test (a retry that spins, say) fails after --timeout
# instead of holding the run; pytest-rerunfailures too: Scrapy's conftest marks tests flaky.
NOT_NEEDED = {"coverage", "pytest-cov", "pytest-xdist", "sybil"}
PYTEST_ARGS = [
    # No network here: those tests fail stock and with the gateway alike, after reruns.
    "-m",
    "not requires_internet",
    # pytest 9 warns (Scrapy's filterwarnings make those errors) about fixtures in its tests.
    "-W",
    "ignore:fixture 'dh' is wrapped by @staticmethod:pytest.PytestWarning",
    "-W",
    "ignore::pytest.PytestRemovedIn10Warning",
    "--continue-on-collection-errors",
]


def log(message: str) -> None:
    print(f"scrapy_suite: {message}", flush=True)


def run(command: list[str], **kwargs: object) -> None:
    subprocess.run(command, check=True, **kwargs)  # type: ignore[call-overload]


def sources(version: str) -> Path:
    """Scrapy's sdist for `version`, unpacked without its scrapy/ package."""
    folder = CACHE / f"scrapy-{version}"
    if (folder / "tox.ini").exists():
        return folder
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = next(CACHE.glob(f"scrapy-{version}.tar.gz"), None)
    if archive is None:
        log(f"downloading the sdist of scrapy=={version}")
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
        run([*pip, f"scrapy=={version}", "-d", str(CACHE)])
        archive = next(CACHE.glob(f"scrapy-{version}.tar.gz"))
    partial = CACHE / f"unpacking-{version}"
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(partial, filter="data")
    unpacked = partial / f"scrapy-{version}"
    shutil.rmtree(unpacked / "scrapy")  # the tests must import the installed Scrapy, not this copy
    unpacked.rename(folder)
    partial.rmdir()
    return folder


def test_requirements(folder: Path) -> list[str]:
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(folder / "tox.ini")
    wanted = []
    for line in tox["test-requirements"]["deps"].splitlines():
        requirement = line.split("#", 1)[0].strip()
        name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()
        if requirement and name not in NOT_NEEDED:
            wanted.append(requirement)
    return wanted


def install(requirements: list[str]) -> None:
    stamp = CACHE / "requirements.installed"
    digest = hashlib.sha256("\n".join(requirements).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    log("pip install " + " ".join(requirements))
    run([sys.executable, "-m", "pip", "install", "-q", *requirements])
    stamp.write_text(digest)


def run_mode(folder: Path, mode: str, timeout: float, extra: list[str]) -> dict[str, list[str]]:
    results_path = CACHE / f"results-{mode}.json"
    results_path.unlink(missing_ok=True)
    files = sorted({str(p.relative_to(folder)) for pattern in FILES for p in (folder / "tests").glob(pattern)})
    env = {
        **os.environ,
        "GATEWAY_SUITE_MODE": mode,
        "GATEWAY_SUITE_RESULTS": str(results_path),
        "PYTHONPATH": os.pathsep.join(p for p in (str(SCRIPTS), str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "scrapy_suite_plugin"]
    command += [f"--timeout={timeout:g}", *PYTEST_ARGS, *extra, *files]
    log(f"mode {mode}: pytest {len(files)} files of Scrapy's tests")
    started = time.monotonic()
    with (CACHE / f"pytest-{mode}.log").open("w") as out:
        subprocess.run(command, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    tail = (CACHE / f"pytest-{mode}.log").read_text(errors="replace").strip().splitlines()[-1:]
    log(f"mode {mode}: {time.monotonic() - started:.0f} s, {tail[0] if tail else 'no output'}")
    if not results_path.exists():
        raise SystemExit(f"mode {mode}: pytest wrote no results; see {CACHE / f'pytest-{mode}.log'}")
    data = json.loads(results_path.read_text())
    changed[mode] = data["crawlers_changed"]
    results: dict[str, list[str]] = data["results"]
    return results


changed: dict[str, int] = {}  # mode -> how many Crawlers the plugin changed


def counts(results: dict[str, list[str]]) -> str:
    tally: dict[str, int] = {}
    for outcome, _ in results.values():
        tally[outcome] = tally.get(outcome, 0) + 1
    order = ["passed", "failed", "error", "skipped", "xfailed"]
    return ", ".join(f"{tally[k]} {k}" for k in order + sorted(set(tally) - set(order)) if k in tally)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, of: " + ", ".join(MODES))
    parser.add_argument("--timeout", type=float, default=60, help="seconds before one test fails as hung")
    parser.add_argument("pytest_args", nargs="*", help="after --: more pytest arguments")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not set(modes) <= set(MODES):
        parser.error(f"--modes: one or more of {', '.join(MODES)}")
    if "stock" not in modes:
        modes.insert(0, "stock")  # new failures are counted against it

    version = scrapy.__version__
    folder = sources(version)
    install(test_requirements(folder))
    results = {mode: run_mode(folder, mode, args.timeout, args.pytest_args) for mode in modes}

    stock = results["stock"]
    lines = [f"Scrapy {version}'s tests ({', '.join(FILES)}), with scrapy-gateway at {describe()}", ""]
    for mode in modes:
        extra = f" ({changed[mode]} crawlers changed)" if mode != "stock" else ""
        lines.append(f"{mode}: {counts(results[mode])}{extra}")
    for mode in modes[1:]:
        new = sorted(
            nodeid
            for nodeid, (outcome, _) in results[mode].items()
            if outcome in ("failed", "error") and stock.get(nodeid, ["?"])[0] == "passed"
        )
        fixed = sorted(
            nodeid
            for nodeid, (outcome, _) in results[mode].items()
            if outcome == "passed" and stock.get(nodeid, ["?"])[0] in ("failed", "error")
        )
        lines += ["", f"{mode}: {len(new)} tests fail that pass stock"]
        lines += [f"  {nodeid}\n      {results[mode][nodeid][1]}" for nodeid in new]
        if fixed:
            lines += [f"{mode}: {len(fixed)} tests pass that fail stock"] + [f"  {nodeid}" for nodeid in fixed]
    report = "\n".join(lines) + "\n"
    (CACHE / "report.txt").write_text(report)
    print("\n" + report + f"\n(written to {CACHE / 'report.txt'}; pytest output in {CACHE}/pytest-MODE.log)")


def describe() -> str:
    done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "?"


if __name__ == "__main__":
    main()
