//! The operator console's approval pages, offered to a waiting call's client: a
//! 2026-07-28 `input_required` answer may carry a URL-mode elicitation pointing at
//! `<console_url>/approvals/<id>`, where an operator signs in and decides. The page only
//! helps a person find the approval; what unlocks the call is still Arbiter's ALLOW for
//! the approval id in the sealed `requestState`, whatever the client answers.

use crate::gateway::Gateway;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RequestContext, RoleServer};

/// The key of the approval page among an answer's `inputRequests` (and of the client's
/// reply among the retry's `inputResponses`).
pub const INPUT_KEY: &str = "arbiter_approval";

/// The page to offer, when the console is configured and this request's client declared
/// URL-mode elicitation (a client that did not may not be sent one).
pub fn page_for(gw: &Gateway, ctx: &RequestContext<RoleServer>, approval: &str) -> Option<String> {
    let base = gw.inner.console_url.as_deref()?;
    let takes_urls = ctx
        .meta
        .client_capabilities()
        .and_then(|c| c.elicitation)
        .is_some_and(|e| e.url.is_some());
    takes_urls.then(|| format!("{}/approvals/{approval}", base.trim_end_matches('/')))
}

/// Whether the retry answered the page with anything but "accept" (the person will not
/// go there): the call is then answered as for a legacy client instead of asking again.
pub fn declined(request: &CallToolRequestParams) -> bool {
    request
        .input_responses
        .as_ref()
        .and_then(|r| r.get(INPUT_KEY))
        .and_then(|reply| reply.get("action"))
        .and_then(|a| a.as_str())
        .is_some_and(|action| action != "accept")
}
