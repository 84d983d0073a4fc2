"""The operator console in a real browser against the real server: sign-in, live
approvals decided in the page while a Python AsyncClient waits, four-eyes, read-only
auditors, the kill switch, the live audit tail, CSRF and logout. A forged request is
sent outside the browser with the victim's cookie and must change nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.parse
from typing import Any

import arbiter
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from conftest import (
    Server,
    arbiter_bin,
    csrf,
    request,
    screenshot,
    session_cookie,
    sign_in,
    start_server,
    wait,
)


def audit_log(server: Server) -> list[dict[str, Any]]:
    """Every audit entry, read with the admin key through `arbiter audit export`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    env["ARBITER_API_KEY"] = server.keys["root"]
    out = subprocess.run(
        [str(arbiter_bin()), "audit", "export", "--addr", "http://" + server.address],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    return [json.loads(line)["entry"] for line in out.stdout.splitlines() if line.strip()]


def audit_kinds(server: Server, kind: str) -> list[str]:
    """Every entry of this kind, as JSON text (for substring checks)."""
    return [json.dumps(e, separators=(",", ":")) for e in audit_log(server) if e["kind"] == kind]


def says(driver: WebDriver, element_id: str, text: str) -> None:
    """Waits until the element shows `text` (a page load may still be landing)."""

    def check(b: WebDriver) -> bool:
        found = b.find_elements(By.ID, element_id)
        return bool(found) and text in found[0].text

    wait(driver).until(check, f"#{element_id} never said {text!r}")


def flash(driver: WebDriver, *expected: str) -> str:
    """The message the page shows after a change, once it holds every `expected` part.

    The previous change's message stays on the page until the redirect lands, so waiting
    for any text would read the old one. The text is read in the page in one step: a
    WebDriver element handle can be swapped out between finding and reading it, which
    Chromium reports as an unknown error, not a stale element."""
    seen = [""]

    def shown(b: WebDriver) -> bool:
        seen[0] = str(
            b.execute_script("const e = document.getElementById('flash'); return e ? e.innerText : '';")
        )
        return all(part in seen[0] for part in expected)

    try:
        wait(driver).until(shown)
    except TimeoutException:
        raise AssertionError(f"#flash never said {expected!r}; it said {seen[0]!r}") from None
    return seen[0]


def live(driver: WebDriver) -> None:
    """Waits until the page's event stream is open (console.js marks it)."""
    wait(driver).until(lambda b: b.find_elements(By.CSS_SELECTOR, '[sse-connect][data-live="open"]'))


def settled(driver: WebDriver) -> None:
    """Waits until the event stream is open and the refresh it starts has landed, so the
    elements a test holds are not swapped out under it."""
    live(driver)
    wait(driver).until(lambda b: b.execute_script("return !document.querySelector('.htmx-request')"))


def card(driver: WebDriver, approval_id: str):
    return driver.find_element(By.ID, f"approval-{approval_id}")


def test_sign_in_refuses_a_bad_key_and_an_agent_key(browser: WebDriver, server: Server) -> None:
    browser.get(server.console + "/approvals")
    assert browser.current_url.endswith("/login")
    screenshot(browser, "login")
    browser.find_element(By.ID, "key").send_keys("arb_not-a-real-key")
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    says(browser, "error", "unknown or revoked API key")
    browser.find_element(By.ID, "key").send_keys(server.keys["bot-runtime"])
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    says(browser, "error", "requires one of the roles operator, admin, auditor")
    assert browser.get_cookie("arbiter_console") is None
    sign_in(browser, server, "alice")
    cookie = browser.get_cookie("arbiter_console")
    assert cookie is not None and cookie["httpOnly"] and cookie.get("sameSite") == "Strict"


def test_an_operator_approves_in_the_page_while_the_agent_waits(
    browser: WebDriver, server: Server, agent: str
) -> None:
    sign_in(browser, server, "bob")
    assert browser.current_url.endswith("/approvals")
    live(browser)
    bot = server.async_client("bot-runtime")

    async def scenario() -> tuple[arbiter.Decision, float, arbiter.Decision]:
        d = await bot.evaluate(
            agent,
            tool="refund_order",
            session_id="s-1",
            cost_usd="2.50",
            arguments={"order": "A-17", "card_number": "4111111111111111"},
        )
        assert d.pending and d.approval_id
        asked = time.monotonic()
        waiting = asyncio.create_task(bot.wait_for_approval(d.approval_id, timeout=30))
        # The page shows it without a reload (server-sent event, then a fetch).
        appeared = await asyncio.to_thread(
            lambda: wait(browser, 5).until(lambda b: b.find_elements(By.ID, f"approval-{d.approval_id}"))
        )
        seen_after = time.monotonic() - asked
        assert appeared
        await asyncio.to_thread(settled, browser)
        shown = card(browser, d.approval_id).text
        assert agent in shown and "refund_order" in shown and "s-1" in shown
        assert "$2.50" in shown and d.policy_version in shown and d.action_digest in shown
        assert "A-17" in shown and "4111111111111111" not in shown, "a sensitive key is shown in clear"
        screenshot(browser, "approvals")
        approved = card(browser, d.approval_id)
        approved.find_element(By.NAME, "reason").send_keys("customer verified")
        approved.find_element(By.CSS_SELECTOR, "button.grant").click()
        approval = await asyncio.wait_for(waiting, 20)
        assert approval.state == "granted" and approval.decided_by == "bob"
        assert approval.decision_reason == "customer verified"
        again = await bot.evaluate(
            agent,
            tool="refund_order",
            session_id="s-1",
            cost_usd="2.50",
            arguments={"order": "A-17", "card_number": "4111111111111111"},
            approval_id=d.approval_id,
        )
        return d, seen_after, again

    d, seen_after, again = asyncio.run(scenario())
    assert seen_after < 1.0, f"the approval appeared after {seen_after:.2f} s"
    assert again.allowed, again.reasons
    flash(browser, "granted")
    wait(browser).until(
        lambda b: (
            f'data-approval="{d.approval_id}"' in b.page_source
            and "customer verified" in b.find_element(By.ID, "decided").text
        )
    )
    grants = [e for e in audit_kinds(server, "approval.grant") if d.approval_id in e]
    assert len(grants) == 1 and '"approver":"bob"' in grants[0]


def test_the_agents_own_operator_is_refused_with_the_four_eyes_reason(
    browser: WebDriver, server: Server, agent: str
) -> None:
    bot = server.client("bot-runtime")
    bot.heartbeat(agent, operator="alice")
    d = bot.evaluate(agent, tool="refund_order")
    assert d.approval_id
    sign_in(browser, server, "alice")
    browser.get(server.console + "/approvals")
    settled(browser)
    shown = card(browser, d.approval_id)
    assert "registered operator" in shown.find_element(By.CLASS_NAME, "four-eyes").text
    shown.find_element(By.CSS_SELECTOR, "button.grant").click()
    flash(browser, "Refused", "four-eyes", "Nothing was changed")
    screenshot(browser, "four-eyes")
    assert server.client("root").get_approval(d.approval_id).state == "pending"
    assert not [e for e in audit_kinds(server, "approval.grant") if d.approval_id in e]
    assert any("four-eyes" in e for e in audit_kinds(server, "auth.denied"))


def test_an_auditor_sees_no_approve_button_and_a_forged_post_is_refused(
    browser: WebDriver, server: Server, agent: str
) -> None:
    d = server.client("bot-runtime").evaluate(agent, tool="refund_order")
    assert d.approval_id
    sign_in(browser, server, "audrey")
    settled(browser)
    shown = card(browser, d.approval_id)
    assert not shown.find_elements(By.CSS_SELECTOR, "button.grant")
    assert "Read only" in shown.text
    denied_before = len(audit_kinds(server, "auth.denied"))
    forged = request(
        server,
        "POST",
        f"/approvals/{d.approval_id}/decide",
        cookie=session_cookie(browser),
        form={"csrf": csrf(browser), "decision": "grant", "reason": "forged"},
    )
    assert forged.status == 403, forged
    assert "may only read" in forged.body
    assert server.client("root").get_approval(d.approval_id).state == "pending"
    assert len(audit_kinds(server, "auth.denied")) == denied_before + 1
    browser.get(server.console + "/halts")
    assert not browser.find_elements(By.ID, "halt-form")


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    browser: WebDriver, server: Server, agent: str
) -> None:
    d = server.client("bot-runtime").evaluate(agent, tool="refund_order")
    assert d.approval_id
    sign_in(browser, server, "bob")
    cookie = session_cookie(browser)
    head = len(audit_log(server))
    for form in ({"decision": "grant", "reason": "x"}, {"csrf": "0" * 64, "decision": "grant"}):
        r = request(server, "POST", f"/approvals/{d.approval_id}/decide", cookie=cookie, form=form)
        assert r.status == 403 and "CSRF" in r.body, r
    r = request(
        server,
        "POST",
        "/halts",
        cookie=cookie,
        form={"action": "halt", "scope": "global", "mode": "EMERGENCY", "reason": "x", "confirmed": "yes"},
    )
    assert r.status == 403 and "CSRF" in r.body
    assert server.client("root").get_approval(d.approval_id).state == "pending"
    assert server.client("root").list_halts() == []
    # Only the three refusals were written.
    after = audit_log(server)[head:]
    assert [e["kind"] for e in after] == ["auth.denied"] * 3, after


def test_the_halt_button_stops_the_next_evaluate_and_resume_restores_it(
    browser: WebDriver, server: Server, agent: str
) -> None:
    bot = server.client("bot-runtime")
    assert bot.evaluate(agent, tool="read_invoice").allowed
    sign_in(browser, server, "bob")
    browser.get(server.console + "/halts")
    browser.find_element(By.ID, "halt-agent").send_keys(agent)
    browser.find_element(By.ID, "halt-reason").send_keys("runaway loop")
    browser.find_element(By.ID, "halt-button").click()
    what = wait(browser).until(lambda b: b.find_element(By.ID, "consequence")).text
    assert f"Every Evaluate of agent {agent} is denied" in what, what
    screenshot(browser, "halt-confirm")
    # Nothing happens before the confirmation.
    assert bot.evaluate(agent, tool="read_invoice").allowed
    browser.find_element(By.ID, "confirm").click()
    flash(browser, "HALT_ALL halt engaged")
    halted = bot.evaluate(agent, tool="read_invoice")
    assert not halted.allowed and halted.reasons[0].code == "halt.engaged"
    row = browser.find_element(By.CSS_SELECTOR, f'tr.halt[data-agent="{agent}"]')
    assert "bob" in row.text and "runaway loop" in row.text
    screenshot(browser, "halts")
    row.find_element(By.NAME, "reason").send_keys("fixed")
    row.find_element(By.CSS_SELECTOR, "form.resume button").click()
    assert "lifted" in wait(browser).until(lambda b: b.find_element(By.ID, "consequence")).text
    browser.find_element(By.ID, "confirm").click()
    flash(browser, "Resumed")
    assert bot.evaluate(agent, tool="read_invoice").allowed
    kinds = [
        e for e in audit_kinds(server, "halt.engage") + audit_kinds(server, "halt.release") if agent in e
    ]
    assert len(kinds) == 2 and all('"bob"' in e for e in kinds), kinds


def test_the_budgets_page_shows_what_the_agent_spent_as_a_bar(
    browser: WebDriver, server: Server, agent: str
) -> None:
    bot = server.client("bot-runtime")
    d = bot.evaluate(agent, tool="read_invoice", cost_usd="3.25")
    assert d.allowed, d.reasons
    bot.record(d.decision_id, cost_usd="3.40")
    held = bot.evaluate(agent, tool="read_invoice", cost_usd="1.10")
    assert held.allowed, held.reasons
    sign_in(browser, server, "audrey")
    browser.get(server.console + "/budgets")
    assert "/budgets" in browser.current_url
    found = f'section.budget[data-budget="cap"][data-scope-key="{agent}"]'
    window = wait(browser).until(lambda b: b.find_element(By.CSS_SELECTOR, found))
    row = window.find_element(By.CSS_SELECTOR, 'tr.amount[data-unit="micro_usd"]')
    bar = row.find_element(By.CSS_SELECTOR, "meter.spent")
    # The bar is the recorded cost (not the estimate), against the policy's $100 cap.
    assert float(bar.get_attribute("value") or "nan") == 3_400_000, bar.get_attribute("value")
    assert float(bar.get_attribute("max") or "nan") == 100_000_000
    assert row.find_element(By.CLASS_NAME, "spent-text").text == "$3.40"
    assert row.find_element(By.CLASS_NAME, "reserved-text").text == "$1.10"
    assert row.find_element(By.CLASS_NAME, "remaining-text").text == "$95.50"
    assert not row.find_elements(By.CLASS_NAME, "flag")
    assert browser.find_element(By.CSS_SELECTOR, 'nav a[aria-current="page"]').text == "Budgets"
    screenshot(browser, "budgets")


def test_the_audit_tail_shows_a_new_entry_within_a_second(
    browser: WebDriver, server: Server, agent: str
) -> None:
    sign_in(browser, server, "audrey")
    browser.get(server.console + "/audit")
    live(browser)
    d = server.client("bot-runtime").evaluate(agent, tool="read_invoice")
    sent = time.monotonic()
    selector = f'tr.entry[data-seq="{d.audit_seq}"]'
    wait(browser, 5).until(lambda b: b.find_elements(By.CSS_SELECTOR, selector))
    took = time.monotonic() - sent
    assert took < 1.0, f"the entry appeared after {took:.2f} s"
    row = browser.find_element(By.CSS_SELECTOR, selector)
    assert agent in row.text and "evaluate" in row.text and "allow" in row.text
    screenshot(browser, "audit")
    row.find_element(By.TAG_NAME, "a").click()
    canonical = browser.find_element(By.ID, "canonical").text
    assert f'"seq":{d.audit_seq}' in canonical and agent in canonical
    screenshot(browser, "entry")
    receipt = request(server, "GET", f"/audit/entry/{d.audit_seq}/receipt", cookie=session_cookie(browser))
    assert receipt.status == 200 and '"inclusion_proof"' in receipt.body
    browser.get(server.console + "/audit")
    browser.find_element(By.ID, "verify").click()
    flash(browser, "Verified")


def test_an_operator_cannot_read_the_audit_log(browser: WebDriver, server: Server) -> None:
    sign_in(browser, server, "bob")
    browser.get(server.console + "/audit")
    says(browser, "error", "requires the auditor or admin role")


def test_logout_ends_the_session(browser: WebDriver, server: Server) -> None:
    sign_in(browser, server, "bob")
    cookie = session_cookie(browser)
    assert request(server, "GET", "/approvals", cookie=cookie).status == 200
    browser.find_element(By.ID, "logout").click()
    wait(browser).until(lambda b: b.current_url.endswith("/login"))
    old = request(server, "GET", "/approvals", cookie=cookie)
    assert old.status == 303 and old.headers["location"] == "/login"


def test_pages_are_served_under_a_strict_policy(server: Server) -> None:
    r = request(server, "GET", "/login")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    assert "<script>" not in r.body and "style=" not in r.body
    asset = request(server, "GET", "/assets/htmx-2.0.11.min.js")
    assert asset.status == 200 and asset.headers["content-type"].startswith("text/javascript")


def test_sign_in_failures_are_rate_limited() -> None:
    # A server of its own: the limit is per client address, and every test here comes
    # from 127.0.0.1.
    s = start_server()
    try:
        made = s.client().create_principal("root", ["admin"])
        assert made.api_key
        codes = [request(s, "POST", "/login", form={"key": "wrong"}).status for _ in range(7)]
        assert codes[:5] == [401] * 5 and codes[5:] == [429, 429], codes
        # Even a good key is refused while the address is limited.
        assert request(s, "POST", "/login", form={"key": made.api_key}).status == 429
    finally:
        s.stop()


def test_development_mode_shows_a_banner_without_sign_in(browser: WebDriver, dev_server: Server) -> None:
    browser.get(dev_server.console + "/")
    banner = wait(browser).until(lambda b: b.find_element(By.ID, "dev-banner"))
    assert "DEVELOPMENT MODE" in banner.text
    assert browser.find_element(By.ID, "me").text.startswith("anonymous")


def agent_path(agent: str) -> str:
    return "/agents/" + urllib.parse.quote(agent, safe="")


def test_the_agents_page_shows_presence_trust_and_spend_and_an_operator_governs_the_agent(
    browser: WebDriver, server: Server, agent: str
) -> None:
    bot = server.client("bot-runtime")
    bot.heartbeat(agent, operator="bob")
    d = bot.evaluate(agent, tool="read_invoice", cost_usd="1.00")
    assert d.allowed, d.reasons
    bot.record(d.decision_id, cost_usd="2.50")
    refused = bot.evaluate(agent, tool="lookup_customer", data=[("pii", "support")])
    failed = [r.code for r in refused.reasons if not r.passed]
    assert not refused.allowed and failed == ["consent.missing"], refused.reasons
    sign_in(browser, server, "alice")
    browser.get(server.console + "/agents")
    row = wait(browser).until(lambda b: b.find_element(By.CSS_SELECTOR, f'tr.agent[data-agent="{agent}"]'))
    assert row.find_element(By.CLASS_NAME, "presence").text == "live"
    assert row.find_element(By.CLASS_NAME, "operator").text == "bob"
    assert row.find_element(By.CLASS_NAME, "trust").text == "L2_SUGGEST"
    # Spend today is what Record settled ($2.50), not the estimate ($1.00).
    assert row.find_element(By.CLASS_NAME, "spend").text == "$2.50"
    assert row.find_element(By.CLASS_NAME, "halted").text == ""
    screenshot(browser, "agents")

    row.find_element(By.TAG_NAME, "a").click()
    says(browser, "agent-id", agent)
    decisions = browser.find_elements(By.CSS_SELECTOR, "#decisions tr.decision")
    outcomes = [r.get_attribute("data-outcome") for r in decisions]
    assert outcomes == ["deny", "allow"], [r.text for r in decisions]
    assert "tool lookup_customer" in decisions[0].text and "consent." in decisions[0].text
    assert "tool read_invoice" in decisions[1].text
    # An operator does not read the log, so the decisions do not link into it.
    assert not browser.find_elements(By.CSS_SELECTOR, "#decisions a")

    Select(browser.find_element(By.ID, "trust-level")).select_by_value("L4_ACT_REPORT")
    browser.find_element(By.ID, "trust-reason").send_keys("six weeks clean")
    browser.find_element(By.ID, "trust-button").click()
    flash(browser, f"Trust of {agent} set to L4_ACT_REPORT")
    assert server.client("root").get_trust(agent).effective_level == arbiter.TrustLevel.L4_ACT_REPORT
    says(browser, "agent-trust", "L4_ACT_REPORT")

    browser.find_element(By.ID, "consent-data-type").send_keys("pii")
    browser.find_element(By.ID, "consent-purpose").send_keys("support")
    browser.find_element(By.ID, "consent-button").click()
    flash(browser, "Consent granted")
    assert bot.evaluate(agent, tool="lookup_customer", data=[("pii", "support")]).allowed
    screenshot(browser, "agent")
    grant = browser.find_element(By.CSS_SELECTOR, 'tr.grant[data-data-type="pii"]')
    grant.find_element(By.CSS_SELECTOR, "form.revoke button").click()
    flash(browser, "revoked")
    assert not bot.evaluate(agent, tool="lookup_customer", data=[("pii", "support")]).allowed

    trust = [e for e in audit_kinds(server, "trust.set") if agent in e]
    changes = audit_kinds(server, "consent.grant") + audit_kinds(server, "consent.revoke")
    consent = [e for e in changes if agent in e]
    assert len(trust) == 1 and '"alice"' in trust[0] and "six weeks clean" in trust[0], trust
    assert len(consent) == 2 and all('"alice"' in e for e in consent), consent


def test_an_auditor_reads_an_agent_but_cannot_change_it(
    browser: WebDriver, server: Server, agent: str
) -> None:
    assert server.client("bot-runtime").evaluate(agent, tool="read_invoice").allowed
    sign_in(browser, server, "audrey")
    browser.get(server.console + agent_path(agent))
    says(browser, "agent-id", agent)
    assert not browser.find_elements(By.ID, "trust-form")
    assert not browser.find_elements(By.ID, "consent-form")
    assert "Read only" in browser.find_element(By.ID, "consent").text
    # The auditor reads the log, so each decision links to its entry.
    assert browser.find_elements(By.CSS_SELECTOR, "#decisions a[href^='/audit/entry/']")
    head = len(audit_log(server))
    r = request(
        server,
        "POST",
        agent_path(agent),
        cookie=session_cookie(browser),
        form={"csrf": csrf(browser), "action": "trust", "level": "L5_AUTONOMOUS"},
    )
    assert r.status == 403 and "may only read" in r.body, r.body
    assert server.client("root").get_trust(agent).effective_level == arbiter.TrustLevel.L2_SUGGEST
    after = audit_log(server)[head:]
    assert [e["kind"] for e in after] == ["auth.denied"], after


def test_a_principal_that_acts_for_the_agent_cannot_raise_its_trust(
    browser: WebDriver, server: Server, agent: str
) -> None:
    assert server.client("bot-runtime").evaluate(agent, tool="read_invoice").allowed
    sign_in(browser, server, "ops-bot")
    browser.get(server.console + agent_path(agent))
    says(browser, "consent", "You act for this agent")
    assert not browser.find_elements(By.ID, "trust-form")
    r = request(
        server,
        "POST",
        agent_path(agent),
        cookie=session_cookie(browser),
        form={"csrf": csrf(browser), "action": "trust", "level": "L5_AUTONOMOUS"},
    )
    assert r.status == 403 and f"acts for agent {agent} and cannot govern it" in r.body, r.body
    assert server.client("root").get_trust(agent).effective_level == arbiter.TrustLevel.L2_SUGGEST
    # A bad field is named and changes nothing (checked after the role, as over gRPC).
    browser.delete_all_cookies()
    sign_in(browser, server, "bob")
    browser.get(server.console + agent_path(agent))
    r = request(
        server,
        "POST",
        agent_path(agent),
        cookie=session_cookie(browser),
        form={"csrf": csrf(browser), "action": "trust", "level": "L9"},
    )
    assert r.status == 400 and "level:" in r.body, r.body


def test_the_budgets_page_lists_a_sessions_window(browser: WebDriver, server: Server, agent: str) -> None:
    # Only agents named botrun-* have the per-session budget (they must send a session).
    agent = agent.replace("bot-", "botrun-")
    bot = server.client("bot-runtime")
    d = bot.evaluate(agent, tool="read_invoice", session_id="run-1", cost_usd="4.00")
    assert d.allowed, d.reasons
    bot.record(d.decision_id, cost_usd="4.00")
    sign_in(browser, server, "alice")
    browser.get(server.console + "/budgets")
    found = f'section.budget[data-budget="run"][data-scope-key="{agent}/run-1"]'
    window = wait(browser).until(lambda b: b.find_element(By.CSS_SELECTOR, found))
    row = window.find_element(By.CSS_SELECTOR, 'tr.amount[data-unit="micro_usd"]')
    assert row.find_element(By.CLASS_NAME, "spent-text").text == "$4.00"
    assert row.find_element(By.CLASS_NAME, "remaining-text").text == "$46.00"


def test_the_policy_page_shows_the_served_version_and_a_rejected_load(
    browser: WebDriver, server: Server
) -> None:
    served = server.client("root").get_policy().current.version
    path = server.directory / "policy.yaml"
    good = path.read_text()
    sign_in(browser, server, "audrey")
    browser.get(server.console + "/policy")
    says(browser, "policy-version", served)
    assert browser.find_element(By.ID, "policy-budgets").text == "2"
    try:
        path.write_text(good + "\nbudgets: [{name: broken, scope: nowhere}]\n")

        def rejected(b: WebDriver) -> bool:
            b.get(server.console + "/policy")
            return bool(b.find_elements(By.CSS_SELECTOR, "#history tr.load.rejected"))

        wait(browser, timeout=15).until(rejected, "the rejected load never appeared")
    finally:
        path.write_text(good)
    row = browser.find_element(By.CSS_SELECTOR, "#history tr.load.rejected")
    error = browser.find_element(By.CSS_SELECTOR, "#history tr.load-error pre.error").text
    assert "rejected" in row.text and "budgets" in error, (row.text, error)
    # The bad file did not replace the served policy.
    says(browser, "policy-version", served)
    in_force = browser.find_element(By.CSS_SELECTOR, "#history tr.load.current")
    assert in_force.get_attribute("data-version") == served
    screenshot(browser, "policy")
