//! AdminService: trust, consent, budgets, agents, policy and principals.
//!
//! Reads are retried on `UNAVAILABLE`; changes are sent once, because a
//! repeat could apply twice (two audit entries, or `NOT_FOUND` on a second revoke).

use arbiter_proto::v1::admin_service_client::AdminServiceClient;

use crate::client::unary_rpcs;

unary_rpcs! {
    AdminServiceClient;
    /// Assigns a trust level to an agent, globally or for one scope. Sent once.
    set_trust(SetTrustRequest) -> SetTrustResponse, Never;
    /// Reads an agent's effective trust level and how it was derived.
    get_trust(GetTrustRequest) -> GetTrustResponse, OnUnavailable;
    /// Lists trust assignments.
    list_trust(ListTrustRequest) -> ListTrustResponse, OnUnavailable;
    /// Grants consent for an agent to access a data type. Sent once.
    grant_consent(GrantConsentRequest) -> GrantConsentResponse, Never;
    /// Revokes exactly one consent grant (`NOT_FOUND` when it does not exist). Sent once.
    revoke_consent(RevokeConsentRequest) -> RevokeConsentResponse, Never;
    /// Lists consent grants.
    list_consents(ListConsentsRequest) -> ListConsentsResponse, OnUnavailable;
    /// Spent, reserved and remaining amounts per applicable budget window.
    get_budgets(GetBudgetsRequest) -> GetBudgetsResponse, OnUnavailable;
    /// Lists the agents Arbiter has seen.
    list_agents(ListAgentsRequest) -> ListAgentsResponse, OnUnavailable;
    /// The current policy bundle and its load history.
    get_policy(GetPolicyRequest) -> GetPolicyResponse, OnUnavailable;
    /// Creates a principal with an API key, which is returned only in this answer. Sent once.
    create_principal(CreatePrincipalRequest) -> CreatePrincipalResponse, Never;
    /// Lists principals (never their keys).
    list_principals(ListPrincipalsRequest) -> ListPrincipalsResponse, OnUnavailable;
    /// Revokes a principal; its key stops working at once. Sent once.
    revoke_principal(RevokePrincipalRequest) -> RevokePrincipalResponse, Never;
    /// Lists MCP tool pins.
    list_tool_pins(ListToolPinsRequest) -> ListToolPinsResponse, OnUnavailable;
    /// Trusts the waiting definition of an MCP tool. Sent once.
    approve_tool_pin(ApproveToolPinRequest) -> ApproveToolPinResponse, Never;
    /// Rejects the waiting definition of an MCP tool. Sent once.
    reject_tool_pin(RejectToolPinRequest) -> RejectToolPinResponse, Never;
}
