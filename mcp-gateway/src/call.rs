//! One `tools/call`: Evaluate (tool = the exposed name, the call's arguments, the run),
//! then forward and Record on ALLOW, answer a denial on DENY, and on PENDING_APPROVAL
//! hold the call while a human decides. The upstream is contacted only after an ALLOW.

use crate::answer;
use crate::gateway::{Gateway, HeldKey};
use crate::identity::Caller;
use crate::metrics::{Metrics, Outcome};
use crate::state::ApprovalState;
use crate::trace::TraceContext;
use crate::upstream::{ClientSink, Upstream, UpstreamError};
use arbiter_client::{proto, ActionOutcome, Decision, DecisionOutcome};
use futures::StreamExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ErrorData, JsonObject,
    ProgressNotificationParam, ResultType,
};
use rmcp::service::{RequestContext, RoleServer};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Progress is reported this often while a call waits for a human.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// One `tools/call`, inside its span (`trace.rs`): a child of the client's span, and the
/// parent of Arbiter's spans for the calls made for it.
pub async fn call_tool(
    gw: &Gateway,
    request: CallToolRequestParams,
    ctx: RequestContext<RoleServer>,
) -> Result<CallToolResponse, ErrorData> {
    let parent = crate::trace::incoming(&ctx);
    let span = crate::trace::call_span(&request.name, &parent);
    let trace = crate::trace::outgoing(&span, &parent);
    traced(gw, request, ctx, trace).instrument(span).await
}

async fn traced(
    gw: &Gateway,
    request: CallToolRequestParams,
    ctx: RequestContext<RoleServer>,
    trace: Option<TraceContext>,
) -> Result<CallToolResponse, ErrorData> {
    let (caller, session) = gw.caller(&ctx)?;
    let caller = caller.traced(trace.as_ref());
    let span = tracing::Span::current();
    span.record("arbiter.agent_id", caller.agent.as_str());
    let exposed = request.name.to_string();
    let Some((upstream, tool)) = gw.route(&exposed) else {
        return Err(ErrorData::invalid_params(
            format!("unknown tool {exposed}"),
            None,
        ));
    };
    let metrics = &gw.inner.metrics;
    // A tool whose definition is not trusted is refused before Arbiter is asked about
    // the call, so an untrusted definition never reaches Evaluate or the upstream.
    let pinned = crate::pins::check_call(gw, &caller, &upstream, &tool, &exposed)
        .await
        .inspect_err(|_| metrics.call(&upstream.name, Outcome::Undecided))?;
    if let Some(why) = pinned {
        metrics.call(&upstream.name, Outcome::Denied);
        return Ok(answer::untrusted_tool(why.code()).into());
    }
    let declined = crate::console::declined(&request);
    let arguments = request.arguments.unwrap_or_default();
    let call = Call {
        price: upstream.prices.get(&tool).copied(),
        receipt: upstream.receipts,
        ..Call::new(&exposed, &arguments)
    };
    // A retry of an `input_required` answer: its state must verify and match this very
    // call, or nothing is asked and nothing forwarded.
    let presented = match request.request_state.as_deref() {
        Some(sealed) => Some(
            gw.inner
                .sealer
                .open(sealed, &caller.agent, call.exposed, &call.digest)
                .map_err(|why| {
                    metrics.call(&upstream.name, Outcome::Denied);
                    answer::request_state_refused(&why)
                })?,
        ),
        None => None,
    };
    let settled = decide(gw, &caller, &session, &call, presented, Some(&ctx))
        .await
        .inspect_err(|_| metrics.call(&upstream.name, Outcome::Undecided))?;
    let decision = match settled {
        Settled::Decided(decision) => *decision,
        Settled::Held(approval) => {
            span.record("arbiter.decision", "pending_approval");
            metrics.call(&upstream.name, Outcome::Pending);
            return Ok(pending(gw, &ctx, &caller, &call, &approval, declined));
        }
    };
    span.record("arbiter.decision", outcome_name(decision.outcome));
    match decision.outcome {
        DecisionOutcome::Allow => {
            metrics.call(&upstream.name, Outcome::Forwarded);
            let target = Target {
                upstream: &upstream,
                tool: &tool,
                price: call.price,
                trace: trace.as_ref(),
            };
            // The client's progress token, if it gave one, receives the upstream's
            // reports for this call, and its log level the upstream's log messages.
            let sink = ClientSink {
                client: ctx.peer.clone(),
                progress: ctx.meta.get_progress_token(),
                log_level: crate::logs::wanted(gw, &ctx, &session),
            };
            let sink = (sink.progress.is_some() || sink.log_level.is_some()).then_some(sink);
            forward(&caller, &decision, target, arguments, sink, metrics)
                .await
                .map(Into::into)
        }
        DecisionOutcome::Deny => {
            let answer = refuse(&decision);
            let outcome = if answer.is_err() {
                Outcome::Halted
            } else {
                Outcome::Denied
            };
            metrics.call(&upstream.name, outcome);
            answer.map(Into::into)
        }
        // Still pending after a grant means it was taken back; never forward.
        DecisionOutcome::PendingApproval => {
            metrics.call(&upstream.name, Outcome::Pending);
            let approval = decision.approval_id.as_deref().unwrap_or_default();
            Ok(pending(gw, &ctx, &caller, &call, approval, declined))
        }
    }
}

/// One call as Arbiter and the sealed state see it: the exposed tool name, the
/// arguments and their RFC 8785 digest, the tool's price (micro-USD per call), and
/// whether the decision should come with a receipt for the upstream.
pub(crate) struct Call<'a> {
    pub exposed: &'a str,
    pub arguments: &'a JsonObject,
    pub digest: String,
    pub price: Option<u64>,
    pub receipt: bool,
}

impl<'a> Call<'a> {
    pub fn new(exposed: &'a str, arguments: &'a JsonObject) -> Self {
        Self {
            exposed,
            arguments,
            digest: digest(arguments),
            price: None,
            receipt: false,
        }
    }
}

/// A call still waiting for a human: `input_required` with a sealed state (and the
/// console's approval page, when the client takes one) for clients on the 2026-07-28
/// revision (or later), the `isError` answer for legacy clients and for a client whose
/// user declined the page.
fn pending(
    gw: &Gateway,
    ctx: &RequestContext<RoleServer>,
    caller: &Caller,
    call: &Call<'_>,
    approval: &str,
    declined: bool,
) -> CallToolResponse {
    let modern = ctx.protocol_version().is_some_and(|v| !v.has_initialize());
    if !modern || approval.is_empty() || declined {
        return answer::pending(approval).into();
    }
    let sealed = gw.inner.sealer.seal(&ApprovalState {
        approval_id: approval.to_owned(),
        agent: caller.agent.clone(),
        tool: call.exposed.to_owned(),
        arguments: call.digest.clone(),
    });
    let page = crate::console::page_for(gw, ctx, approval);
    answer::input_required(approval, sealed, page).into()
}

/// How a call's decision settled: a decision, or an approval still awaited.
pub(crate) enum Settled {
    Decided(Box<Decision>),
    Held(String),
}

/// Evaluate (presenting the approval of a verified `requestState`, else the one held
/// for this exact call, if any), and on PENDING_APPROVAL hold the call for
/// `approval_wait`; a grant is evaluated again with the approval id, which consumes it.
/// `ctx` (MCP only) carries cancellation and progress.
pub(crate) async fn decide(
    gw: &Gateway,
    caller: &Caller,
    session: &str,
    call: &Call<'_>,
    presented: Option<String>,
    ctx: Option<&RequestContext<RoleServer>>,
) -> Result<Settled, ErrorData> {
    let key = HeldKey {
        agent: caller.agent.clone(),
        tool: call.exposed.to_owned(),
        arguments: call.digest.clone(),
    };
    let held = presented.or_else(|| gw.held(&key));
    let decision = evaluate(caller, session, call, held.as_deref()).await?;
    if held.is_some() && !decision.is_pending() {
        // The approval was used (ALLOW) or is final (denied, expired, consumed).
        gw.forget(&key);
    }
    if !decision.is_pending() {
        return Ok(Settled::Decided(Box::new(decision)));
    }
    let approval = decision.approval_id.clone().unwrap_or_default();
    gw.remember(key.clone(), approval.clone());
    if !wait_for_grant(gw, caller, &approval, ctx).await {
        return Ok(Settled::Held(approval));
    }
    let decision = evaluate(caller, session, call, Some(&approval)).await?;
    gw.forget(&key);
    Ok(Settled::Decided(Box::new(decision)))
}

async fn evaluate(
    caller: &Caller,
    session: &str,
    call: &Call<'_>,
    approval: Option<&str>,
) -> Result<Decision, ErrorData> {
    let mut builder = caller
        .arbiter
        .evaluate(caller.agent.clone())
        .tool(call.exposed)
        .arguments(serde_json::Value::Object(call.arguments.clone()));
    // The price is the estimate budgets reserve; the same on every Evaluate of a call,
    // so an approval's action digest still matches on the retry.
    if let Some(price) = call.price {
        builder = builder.cost_micro_usd(price);
    }
    if !session.is_empty() {
        builder = builder.session(session);
    }
    if let Some(id) = approval {
        builder = builder.approval_id(id);
    }
    if call.receipt {
        builder = builder.receipt(true);
    }
    // Any error is "no decision": nothing is forwarded (fail closed).
    builder.send().await.map_err(|e| {
        tracing::warn!(agent = %caller.agent, error = %e, "Evaluate failed; call not forwarded");
        answer::undecided(e)
    })
}

pub(crate) fn refuse(decision: &Decision) -> Result<CallToolResult, ErrorData> {
    let code = decision
        .reason()
        .map(|r| r.code.as_str())
        .unwrap_or("denied");
    if code.starts_with("halt.") {
        return Err(answer::halted(code, &decision.decision_id));
    }
    Ok(answer::denied(code, &decision.decision_id))
}

fn outcome_name(outcome: DecisionOutcome) -> &'static str {
    match outcome {
        DecisionOutcome::Allow => "allow",
        DecisionOutcome::Deny => "deny",
        DecisionOutcome::PendingApproval => "pending_approval",
    }
}

/// Where an allowed call goes: the upstream, its own name for the tool, the price a
/// result without usage is charged, and the trace context the upstream joins.
pub(crate) struct Target<'a> {
    pub upstream: &'a Upstream,
    pub tool: &'a str,
    pub price: Option<u64>,
    pub trace: Option<&'a TraceContext>,
}

pub(crate) async fn forward(
    caller: &Caller,
    decision: &Decision,
    target: Target<'_>,
    arguments: JsonObject,
    sink: Option<ClientSink>,
    metrics: &Metrics,
) -> Result<CallToolResult, ErrorData> {
    let Target {
        upstream,
        tool,
        price,
        trace,
    } = target;
    let mut meta = upstream_meta(decision.receipt(), trace);
    if let Some(level) = sink.as_ref().and_then(|s| s.log_level) {
        // A 2026-07-28 upstream sends log messages only for requests that ask.
        meta.get_or_insert_with(JsonObject::new)
            .insert(LOG_LEVEL_META.to_owned(), serde_json::json!(level));
    }
    let started = Instant::now();
    let result = upstream
        .call_tool(
            tool,
            (!arguments.is_empty()).then_some(arguments),
            meta,
            sink,
        )
        .await;
    let error = result.as_ref().err().map(UpstreamError::kind);
    metrics.upstream_call(&upstream.name, started.elapsed().as_secs_f64(), error);
    let (outcome, output) = match &result {
        Ok(r) if r.is_error == Some(true) => (ActionOutcome::Failure, Some(r)),
        Ok(r) => (ActionOutcome::Success, Some(r)),
        Err(_) => (ActionOutcome::Error, None),
    };
    let mut record = caller
        .arbiter
        .record(decision.decision_id.clone())
        .outcome(outcome)
        .duration(started.elapsed());
    if let Some(r) = output {
        record = record.output_digest(digest_value(&serde_json::to_value(r).unwrap_or_default()));
    }
    if let Some(usage) = crate::usage::of(output, price) {
        record = record.usage(usage);
    }
    // The call has happened: a failed Record is logged, and the client still gets
    // the result (the reservation lapses on its own; Record is idempotent).
    if let Err(e) = record.send().await {
        tracing::warn!(decision = %decision.decision_id, error = %e, "Record failed");
    }
    result.map_err(answer::upstream).map(|mut r| {
        // A legacy upstream sends no resultType; a 2026-07-28 client needs one, and
        // rmcp drops it again for legacy clients.
        r.result_type = Some(ResultType::COMPLETE);
        r
    })
}

/// The upstream request's `_meta`: the decision's receipt when the upstream asked for
/// receipts, and the trace context (SEP-414 keys) so the tool server's work joins the
/// call's trace. The client's own `_meta` is not passed on.
fn upstream_meta(
    receipt: Option<&proto::Receipt>,
    trace: Option<&TraceContext>,
) -> Option<JsonObject> {
    let mut meta = receipt.map(receipt_meta).unwrap_or_default();
    if let Some(t) = trace {
        meta.insert("traceparent".to_owned(), t.traceparent.clone().into());
        if let Some(ts) = &t.tracestate {
            meta.insert("tracestate".to_owned(), ts.clone().into());
        }
    }
    (!meta.is_empty()).then_some(meta)
}

/// The receipt's `_meta` entry: the same four fields as `arbiter audit proof` writes,
/// which `arbiter audit verify-receipt` and `arbiter_client::proof::verify_receipt`
/// check with only the public key.
fn receipt_meta(receipt: &proto::Receipt) -> JsonObject {
    let mut meta = JsonObject::new();
    meta.insert(
        RECEIPT_META.to_owned(),
        serde_json::json!({
            "entry": receipt.entry,
            "mac": receipt.mac,
            "inclusion_proof": receipt.inclusion_proof,
            "checkpoint": receipt.checkpoint,
        }),
    );
    meta
}

/// The request `_meta` key asking for log messages at a level (2026-07-28, SEP-2575).
const LOG_LEVEL_META: &str = "io.modelcontextprotocol/logLevel";

/// The `_meta` key of the receipt handed to an upstream.
pub const RECEIPT_META: &str = "io.github.arbiter/receipt";

/// Waits for the approval to be granted, up to `approval_wait`, reporting progress to
/// clients that asked for it. True only for a grant.
async fn wait_for_grant(
    gw: &Gateway,
    caller: &Caller,
    approval: &str,
    ctx: Option<&RequestContext<RoleServer>>,
) -> bool {
    let wait = gw.inner.approval_wait;
    if wait.is_zero() || approval.is_empty() {
        return false;
    }
    let stream = caller
        .arbiter
        .watch_approval(proto::WatchApprovalRequest {
            approval_id: approval.to_owned(),
        })
        .await;
    let Ok(mut stream) = stream else {
        return false;
    };
    let token = ctx.and_then(|c| c.meta.get_progress_token());
    let cancelled = async {
        match ctx {
            Some(c) => c.ct.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(cancelled);
    let deadline = tokio::time::Instant::now() + wait;
    let mut ticks = 0u32;
    loop {
        let next = tokio::time::timeout(PROGRESS_EVERY, stream.next());
        tokio::select! {
            _ = &mut cancelled => return false,
            _ = tokio::time::sleep_until(deadline) => return false,
            item = next => match item {
                Ok(Some(Ok(a))) => match proto::ApprovalState::try_from(a.state) {
                    Ok(proto::ApprovalState::Granted) => return true,
                    Ok(proto::ApprovalState::Pending) => {}
                    _ => return false,
                },
                Ok(_) => return false,
                Err(_) => {
                    ticks += 1;
                    if let (Some(token), Some(c)) = (&token, ctx) {
                        let mut p = ProgressNotificationParam::new(token.clone(), f64::from(ticks));
                        p.message = Some(format!("waiting for approval {approval}"));
                        let _ = c.peer.notify_progress(p).await;
                    }
                }
            },
        }
    }
}

/// The arguments' identity: SHA-256 of their RFC 8785 form.
fn digest(arguments: &JsonObject) -> String {
    digest_value(&serde_json::Value::Object(arguments.clone()))
}

pub(crate) fn digest_value(value: &serde_json::Value) -> String {
    let bytes = serde_jcs::to_vec(value).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
