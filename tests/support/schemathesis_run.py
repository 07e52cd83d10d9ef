"""`schemathesis run` against a live pushsvc, as the fuzz suite runs it: its phases (examples,
coverage, fuzzing), every check it has, and the hooks of `support.schemathesis_hooks`.

A run is reproducible: by default Schemathesis generates deterministically (the same cases
every run); `TEST_PUSHSVC_FUZZ_SEED=<n>` runs a seeded random search instead, and
`TEST_PUSHSVC_FUZZ_EXAMPLES=<n>` sets the examples per operation for a deeper run. A failed
run's message gives the seed (or says it was deterministic) and the command that repeats it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from support.schemathesis_hooks import TOPIC_PREFIX_ENV

MAX_EXAMPLES = int(os.environ.get("TEST_PUSHSVC_FUZZ_EXAMPLES", "15"))
"""Schema-valid and as many schema-invalid cases per operation in the fuzzing phase (the
coverage phase sends what the document's boundaries call for, whatever this is)."""
PHASES = ("coverage", "fuzzing")
SEED = os.environ.get("TEST_PUSHSVC_FUZZ_SEED")

_ALL_PHASES = ("examples", "coverage", "fuzzing", "stateful")
_TESTS = str(Path(__file__).resolve().parents[1])
_EXPECTED_REFUSALS = [
    *("400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx"),
    # A batch over 10,000 events (the schema's maxItems) is refused as too large, 413, and a
    # request line over the WSGI server's limit (long invalid query values) as 414, both
    # documented; schemathesis' own list of rejections has neither.
    *("413", "414"),
]


def _config(max_examples: int, headers: Mapping[str, str], phases: tuple[str, ...]) -> str:
    generation = (
        f"seed = {int(SEED)}\n[generation]\ndeterministic = false\n"
        if SEED is not None
        else "[generation]\ndeterministic = true\n"
    )
    lines = [
        'hooks = "support.schemathesis_hooks"',
        # An event stream is read until its first event (the snapshot or a replayed update, sent
        # at once) or for at most the request timeout: a liveness bound, generous for two busy
        # cores; its first event is checked against the SSE schema like any body.
        "request-timeout = 20",
        "max-stream-events = 1",
        "workers = 1",
        generation.rstrip("\n"),
        f"max-examples = {max_examples}",
        'database = "none"',
        # The examples phase has no examples to send; the stateful phase no links to follow.
        *(f"[phases.{phase}]\nenabled = {str(phase in phases).lower()}" for phase in _ALL_PHASES),
        # A messages stream asked for without a resume point sends nothing until a message is
        # published (the hooks give the positive cases one): cut short after a few seconds.
        '[[operations]]\ninclude-path-regex = "messages$"\nrequest-timeout = 3',
        "[checks.negative_data_rejection]",
        f"expected-statuses = {json.dumps(_EXPECTED_REFUSALS)}",
    ]
    if headers:
        lines.append("[headers]")
        lines += [f"{json.dumps(name)} = {json.dumps(value)}" for name, value in headers.items()]
    return "\n".join(lines) + "\n"


@dataclass
class FuzzRun:
    """What one `schemathesis run` did: its exit status, output and answers."""

    returncode: int
    output: str
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    """Per operation (`GET /topics`), how many answers had each status."""

    @property
    def cases(self) -> int:
        return sum(sum(c.values()) for c in self.statuses.values())

    def failure(self, base: str) -> str:
        how = f"seed {SEED}" if SEED is not None else "deterministic generation"
        return (
            f"schemathesis found failures against {base} ({how}; the same run again: "
            f"TEST_PUSHSVC_FUZZ_SEED={SEED or ''} TEST_PUSHSVC_FUZZ_EXAMPLES={MAX_EXAMPLES}, "
            f"the same test):\n{self.output}"
        )


def run(
    base: str,
    report_dir: Path,
    *,
    headers: Mapping[str, str] | None = None,
    topic_prefix: str = "",
    max_examples: int = MAX_EXAMPLES,
    phases: tuple[str, ...] = PHASES,
) -> FuzzRun:
    """Run schemathesis against the pushsvc at `base` (its own `/openapi.json`), every
    request with `headers`; `topic_prefix`: schema-valid requests' topics start with it."""
    report_dir.mkdir(parents=True, exist_ok=True)
    config = report_dir / "schemathesis.toml"
    config.write_text(_config(max_examples, headers or {}, phases))
    report = report_dir / "events.ndjson"
    # From a copy: schemathesis leaves out the operation its document was loaded from, and
    # `/openapi.json` is one of ours.
    document = report_dir / "openapi.json"
    with urllib.request.urlopen(f"{base}/openapi.json", timeout=30) as answer:
        document.write_bytes(answer.read())
    argv = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"),
        *(str(document), "--url", base),
        *("--checks", "all", "--exclude-checks", "positive_data_acceptance"),
        *("--report", "ndjson", "--report-ndjson-path", str(report), "--no-color"),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([_TESTS, os.environ.get("PYTHONPATH", "")]),
        TOPIC_PREFIX_ENV: topic_prefix,
    }
    done = subprocess.run(
        argv, env=env, cwd=report_dir, capture_output=True, text=True, timeout=600, check=False
    )
    fuzz = FuzzRun(done.returncode, done.stdout + done.stderr)
    if report.exists():
        fuzz.statuses = _statuses(report)
    return fuzz


def _statuses(report: Path) -> dict[str, Counter[int]]:
    found: dict[str, Counter[int]] = defaultdict(Counter)
    for line in report.read_text().splitlines():
        finished = json.loads(line).get("ScenarioFinished")
        if finished is None:
            continue
        recorder = finished["recorder"]
        for interaction in recorder.get("interactions", {}).values():
            response = interaction.get("response")
            if response is not None:
                found[recorder["label"]][response["status_code"]] += 1
    return dict(found)
