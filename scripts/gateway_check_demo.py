"""Regenerate docs/gateway-check-demo.txt and .json: `scrapy gateway-check` run inside the demo
project against freshly started demo worlds (the "demo" scenario, then "tls" for the text).

    python scripts/gateway_check_demo.py

Each run starts its own world, so the "news" origin is inside its first 6 s of failures; the
"flaky" proxy fails half of its requests at random, so its lines change from run to run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from demo_world import World, build

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


sys.path.insert(0, str(ROOT / "example_project"))
from run_demo import legend as world_legend  # noqa: E402  (the demo's own legend of the world)


def legend(world: World) -> list[str]:
    return [f"# {line}" for line in world_legend(world).splitlines()]


def check(scenario: str, *extra: str) -> tuple[list[str], str, int]:
    """The world's legend, the command's output and its exit status."""
    with build(scenario) as world:
        proxies = ",".join(proxy.url for proxy in world.proxies.values())
        urls = [origin.url("/p/1") for origin in world.origins.values()]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(
            [sys.executable, "-m", "scrapy", "gateway-check", "-s", f"GATEWAY_PROXIES={proxies}", *extra, *urls],
            cwd=ROOT / "example_project",
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode not in (0, 1):
            raise SystemExit(f"gateway-check failed ({done.returncode}):\n{done.stderr}")
        return legend(world), done.stdout, done.returncode


def main() -> None:
    DOCS.mkdir(exist_ok=True)
    parts = []
    for scenario in ("demo", "tls"):
        names, out, status = check(scenario)
        parts.append(
            "\n".join(
                [
                    f"# scenario {scenario!r}: cd example_project && "
                    "scrapy gateway-check -s GATEWAY_PROXIES=<the world's proxies> <each origin>/p/1",
                    "# (the demo project's settings: DOWNLOAD_TIMEOUT = 5, so a 5 s timeout per path)",
                    *names,
                    f"# exit status {status}",
                    "",
                    out.rstrip("\n"),
                ]
            )
        )
    (DOCS / "gateway-check-demo.txt").write_text("\n\n\n".join(parts) + "\n")
    _, out, _ = check("demo", "--json")
    (DOCS / "gateway-check-demo.json").write_text(out)


if __name__ == "__main__":
    main()
