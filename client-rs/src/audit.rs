//! AuditService: query, tail, verify and export the audit log, and fetch
//! checkpoints and Merkle proofs. Every call is a read and is retried on `UNAVAILABLE`.

use arbiter_proto::v1::audit_service_client::AuditServiceClient;
use futures::StreamExt;

use crate::call::ResultStream;
use crate::client::unary_rpcs;
use crate::{proto, Client, Error};

unary_rpcs! {
    AuditServiceClient;
    /// Pages through entries matching a filter, in sequence order.
    query_audit(QueryAuditRequest) -> QueryAuditResponse, OnUnavailable;
    /// Verifies the chain over a range and names the first bad entry. Long
    /// logs may need a longer deadline: see [`Client::with_timeout`].
    verify_audit(VerifyAuditRequest) -> VerifyAuditResponse, OnUnavailable;
    /// The latest signed checkpoint of the Merkle tree.
    get_checkpoint(GetCheckpointRequest) -> GetCheckpointResponse, OnUnavailable;
    /// Proves one entry is included in the tree of a given size.
    get_inclusion_proof(GetInclusionProofRequest) -> GetInclusionProofResponse, OnUnavailable;
    /// Proves a tree of one size is a prefix of a tree of a larger size.
    get_consistency_proof(GetConsistencyProofRequest) -> GetConsistencyProofResponse, OnUnavailable;
}

impl Client {
    /// Streams matching entries from a sequence number on, then every new
    /// entry as it commits. The stream does not end by itself.
    pub async fn tail_audit(
        &self,
        request: proto::TailAuditRequest,
    ) -> Result<ResultStream<proto::AuditEntry>, Error> {
        self.server_stream(
            request,
            |channel, request| async move {
                AuditServiceClient::new(channel).tail_audit(request).await
            },
            |message: proto::TailAuditResponse| message.entry,
        )
        .await
    }

    /// Streams a range of the log as JSONL lines, each
    /// `{"entry":<canonical>,"mac":"<hex>"}`, in sequence order, without newlines.
    pub async fn export_audit(
        &self,
        request: proto::ExportAuditRequest,
    ) -> Result<ResultStream<String>, Error> {
        let batches = self
            .server_stream(
                request,
                |channel, request| async move {
                    AuditServiceClient::new(channel).export_audit(request).await
                },
                |message: proto::ExportAuditResponse| Some(message.lines),
            )
            .await?;
        Ok(batches
            .flat_map(|batch| {
                let lines: Vec<Result<String, Error>> = match batch {
                    Ok(lines) => lines.into_iter().map(Ok).collect(),
                    Err(error) => vec![Err(error)],
                };
                futures::stream::iter(lines)
            })
            .boxed())
    }
}
