"""The real conformance suite on this machine's kernel, through the real
command: it passes, its KTAP parses strictly and agrees with its JSON, a
deliberately wrong spec makes it fail, and SIGTERM mid-run leaves nothing
behind."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import ktap_grammar
from procfs import SESSION, processes_where

import spec

ROOT = Path(__file__).resolve().parent.parent
CLI = [str(Path(sys.executable).parent / "uffd-uabi"), "conform"]
SPEC = spec.load()
WRONG_ID = "move.errno.EEXIST.dst-populated"


def conform(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def explain(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout[-6000:]}\n--- stderr\n{done.stderr[-6000:]}"


def session_members(sid: int) -> list[int]:
    return processes_where(SESSION, sid)


def test_the_suite_passes_on_this_kernel(tmp_path: Path) -> None:
    done = conform("--json", str(tmp_path / "r.json"), "--ktap", str(tmp_path / "r.ktap"))
    assert done.returncode == 0, explain(done)
    assert (tmp_path / "r.ktap").read_text() == done.stdout

    doc = ktap_grammar.parse(done.stdout)
    data = json.loads((tmp_path / "r.json").read_text())
    assert [(t.description, t.kind) for _, t in doc.leaves()] == \
        [(r["id"], r["status"].lower()) for r in data["results"]]
    # every behaviour of the spec has exactly one result, in spec order within its group
    ids = [b.id for b in SPEC.behaviours]
    assert sorted(r["id"] for r in data["results"]) == sorted(ids)
    for group, _ in doc.leaves():
        in_group = [t.description for g, t in doc.leaves() if g == group]
        assert in_group == sorted(in_group, key=ids.index)
    assert not [r for r in data["results"] if r["status"] in ("FAIL", "ERROR", "TIMEOUT")]
    assert data["kernel"]["release"] == os.uname().release
    assert f"kernel: {os.uname().release}" in doc.diagnostics
    assert any(d.startswith("features: 0x") for d in doc.diagnostics)


def test_a_wrong_expectation_fails_the_run(tmp_path: Path) -> None:
    """Edit one expectation of a copy of the spec: the same checks now fail
    it, so the verdict comes from the spec and not from the checks."""
    text = Path(spec.DEFAULT_SPEC).read_text()
    start = text.index(f"- id: {WRONG_ID}\n")
    end = text.index("- id:", start + 1)
    block = text[start:end]
    assert block.count("move: -errno") == 1
    copy = tmp_path / "wrong.yaml"
    copy.write_text(text[:start] + block.replace("move: -errno", "move: untouched") + text[end:])
    wrong = spec.load(copy).behaviour(WRONG_ID)
    assert [e.move for e in wrong.expect] == ["untouched"]

    done = conform("--spec", str(copy), "--only", WRONG_ID)
    assert done.returncode == 1, explain(done)
    doc = ktap_grammar.parse(done.stdout)
    [(_, result)] = doc.leaves()
    assert (result.description, result.kind) == (WRONG_ID, "fail")
    assert "move=untouched" in result.diagnostics[-1] and "move=-errno" in result.diagnostics[-1]
    assert f"not ok 1 {WRONG_ID}" in done.stdout


def test_list_names_every_behaviour_and_runs_nothing() -> None:
    done = conform("--list", timeout=120)
    assert done.returncode == 0, explain(done)
    listed = done.stdout
    assert "(no check)" not in listed
    for b in SPEC.behaviours:
        assert b.id in listed
    module = subprocess.run([sys.executable, "-m", "conformance", "--list"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert (module.returncode, module.stdout) == (done.returncode, done.stdout)


def test_only_matching_nothing_is_a_usage_error() -> None:
    pattern = "no.such.behaviour.*"
    assert not [b for b in SPEC.behaviours if b.id.startswith("no.such.behaviour.")]
    done = conform("--only", pattern, timeout=120)
    assert done.returncode == 2, explain(done)
    assert pattern in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_sigterm_mid_run_kills_the_check_and_leaves_no_process() -> None:
    proc = subprocess.Popen(CLI, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 300
        lines = []
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
            if not ready:
                break
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("  ok ") or line.startswith("  not ok "):
                break  # the first result is out: the run is among its checks
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:  # a failing run must not outlive the test, nor its checks
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in session_members(proc.pid):
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "# interrupted by SIGTERM" in out
    assert session_members(proc.pid) == []
