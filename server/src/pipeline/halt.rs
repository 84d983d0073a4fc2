//! Stage 1: the kill switch. Owns the `halt.*` codes. Halts are engaged through the
//! control API (a later release); until one is engaged this stage passes.

use super::{Reason, Request, Snapshot};

pub fn check(_req: &Request<'_>, _snap: &Snapshot<'_>) -> Reason {
    Reason::pass("halt", "ok", "no halt applies")
}
