"""The MCP conformance suite (`@modelcontextprotocol/conformance`, its server scenarios) run
against the gateway, with an allow-all policy in front of conformance_upstream.py.

conformance-baseline.json lists the scenarios expected to fail, each with why. The test
fails when a scenario fails that is not listed, and when a listed one passes (then the
entry is stale and must go), so the baseline stays true."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import HERE, node_bin, npm_package, running_stack

ALLOW_ALL = """
version: 1
agents:
  - id: "bot-*"
    tools: {allow: ["*"]}
"""
BASELINE = HERE / "conformance-baseline.json"


def scenario_results(out: Path) -> dict[str, list[dict[str, object]]]:
    """Each scenario's checks, from the runner's `server-<scenario>-<time>/checks.json`."""
    results: dict[str, list[dict[str, object]]] = {}
    for checks in sorted(out.glob("server-*/checks.json")):
        scenario = re.sub(r"-\d{4}-\d{2}-\d{2}T[\d-]+Z$", "", checks.parent.name.removeprefix("server-"))
        results[scenario] = json.loads(checks.read_text(encoding="utf-8"))
    return results


def test_the_mcp_conformance_suite_through_the_gateway_matches_its_baseline(tmp_path: Path) -> None:
    baseline: dict[str, str] = json.loads(BASELINE.read_text(encoding="utf-8"))["expected_failures"]
    runner = npm_package("conformance", "dist/index.js")
    upstream = f"""
  - name: conformance
    stdio:
      command: {json.dumps(sys.executable)}
      args: [{json.dumps(str(HERE / "conformance_upstream.py"))}]
"""
    with running_stack(tmp_path, ALLOW_ALL) as stack:
        gw = stack.gateway(upstreams=upstream)
        out = tmp_path / "results"
        env = {"ARBITER_CONFORMANCE_KEY": stack.keys["bot-1"], "ARBITER_CONFORMANCE_URL": gw.url}
        run = subprocess.run(
            [
                *[node_bin(), "--import", str(HERE / "conformance_auth.mjs"), str(runner), "server"],
                *["--url", gw.url, "--output-dir", str(out)],
            ],
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        evaluates = [e for e in stack.audit() if e["kind"] == "evaluate"]

    results = scenario_results(out)
    assert len(results) >= 30, (sorted(results), run.stdout[-3000:], run.stderr[-3000:])
    failing = {
        name: [str(c.get("errorMessage", c["id"])) for c in checks if c["status"] == "FAILURE"]
        for name, checks in results.items()
    }
    failing = {name: why for name, why in failing.items() if why}
    new = {name: why for name, why in failing.items() if name not in baseline}
    fixed = sorted(set(baseline) - set(failing))
    assert not new, f"new conformance failures (fix them or explain them in the baseline): {new}"
    assert not fixed, f"baseline entries now pass (remove them from {BASELINE.name}): {fixed}"
    # The runner's tool calls really went through Arbiter: one allowed Evaluate each.
    tools = {e["body"]["action"]["tool"] for e in evaluates if e["outcome"] == "allow"}
    assert {"test_simple_text", "test_error_handling", "test_tool_with_progress"} <= tools, tools
