"""An operator's view: pending approvals, halts, and the audit chain.

ARBITER_API_KEY=arb_... python client-py/examples/operator_desk.py [--approve-all]
"""

from __future__ import annotations

import os
import sys

import arbiter


def main(argv: list[str]) -> int:
    client = arbiter.Client(
        os.environ.get("ARBITER_ADDR", "127.0.0.1:50051"),
        api_key=os.environ.get("ARBITER_API_KEY"),
    )
    pending = client.list_approvals(state="pending").approvals
    for approval in pending:
        print(f"{approval.approval_id}: {approval.agent_id} wants {approval.action_summary}")
        if "--approve-all" in argv:
            client.approve(approval.approval_id, reason="approved from operator_desk.py")
    for halt in client.list_halts():
        print(f"halt ({halt.scope} {halt.agent_id or '*'}): {halt.mode}, {halt.reason}")
    verified = client.audit.verify()
    if not verified.ok:
        print(f"audit chain broken at #{verified.first_bad_seq}: {verified.fault}")
        return 1
    print(f"audit chain ok: {verified.checked} entries, head #{verified.head_seq}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
