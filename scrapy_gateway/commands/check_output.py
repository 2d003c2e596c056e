"""gateway-check's two outputs: a table for people, a JSON document for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from scrapy_gateway.core.diagnosis import PathDiagnosis, Timings, UrlDiagnosis

# Always shown; the others only when some path of the run has them (TLS, tunnels, https proxies).
_ALWAYS = ("dns", "connect", "ttfb", "total")
_PHASES = ("dns", "connect", "proxy_tls", "tunnel", "tls", "ttfb", "total")


def exit_status(diagnoses: Sequence[UrlDiagnosis]) -> int:
    """0 when some path reaches every URL; 1 when one URL at least is reached by no path."""
    return 0 if all(diagnosis.reached for diagnosis in diagnoses) else 1


def as_json(diagnoses: Sequence[UrlDiagnosis]) -> str:
    document = {
        "urls": [_url_document(diagnosis) for diagnosis in diagnoses],
        "reached": all(diagnosis.reached for diagnosis in diagnoses),
        "exit_status": exit_status(diagnoses),
    }
    return json.dumps(document, indent=2)


def _url_document(diagnosis: UrlDiagnosis) -> dict[str, Any]:
    return {
        "url": diagnosis.url,
        "verdict": diagnosis.verdict.value,
        "summary": diagnosis.summary,
        "findings": list(diagnosis.findings),
        "reached": diagnosis.reached,
        "paths": [_path_document(path) for path in diagnosis.paths],
    }


def _path_document(path: PathDiagnosis) -> dict[str, Any]:
    probe = path.probe
    return {
        "path": probe.path,
        "proxy": probe.proxy,
        "status": probe.status,
        "error": probe.error.value if probe.error else None,
        "phase": probe.phase.value if probe.phase else None,
        "detail": probe.detail,
        "tunnel": probe.tunnel,
        "timings": {name: _rounded(value) for name, value in asdict(probe.timings).items()},
        "headers": dict(probe.headers),
        "fault": {"kind": path.fault.kind, "blame": path.fault.blame.value} if path.fault else None,
        "verdict": path.verdict.value,
        "reason": path.reason,
        "reached": path.reached,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)  # microseconds: finer is the clock's noise


def as_text(diagnoses: Sequence[UrlDiagnosis]) -> str:
    present = {
        name for d in diagnoses for p in d.paths for name in _PHASES if getattr(p.probe.timings, name) is not None
    }
    phases = [name for name in _PHASES if name in _ALWAYS or name in present]
    blocks = [_url_text(diagnosis, phases) for diagnosis in diagnoses]
    reached = sum(diagnosis.reached for diagnosis in diagnoses)
    blocks.append(f"{reached} of {len(diagnoses)} URLs reached by at least one path")
    return "\n\n".join(blocks)


def _url_text(diagnosis: UrlDiagnosis, phases: list[str]) -> str:
    lines = [f"{diagnosis.url}", f"  verdict: {diagnosis.summary} [{diagnosis.verdict.value}]"]
    lines += [f"  - {finding}" for finding in diagnosis.findings]
    width = max(len("path"), *(len(path.probe.path) for path in diagnosis.paths))
    header = f"  {'path':<{width}}  status" + "".join(f"{name:>10}" for name in phases) + "  verdict"
    lines.append(header)
    for path in diagnosis.paths:
        probe = path.probe
        status = str(probe.status) if probe.status is not None else "-"
        timings = "".join(f"{_seconds(probe.timings, name):>10}" for name in phases)
        verdict = path.verdict.value if path.verdict.value == "ok" else f"{path.verdict.value}: {path.reason}"
        lines.append(f"  {probe.path:<{width}}  {status:>6}{timings}  {verdict}")
        notes = [f"{name}: {value}" for name, value in probe.headers.items()]
        if probe.detail:
            notes.append(probe.detail)
        if notes:
            lines.append(f"  {'':<{width}}    " + "; ".join(notes))
    return "\n".join(lines)


def _seconds(timings: Timings, name: str) -> str:
    value = getattr(timings, name)
    return "-" if value is None else f"{value:.3f}"
