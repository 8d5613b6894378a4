"""Webhooks: where deliveries may go (`destinations`), how they are signed
(`signing`), and how one is sent (`sender`).

Deliveries are queued by the state-change scripts themselves (see `emit` in
`factq/state/lua/prelude.lua`, and `factq.state.webhook_queue`) and sent by
the workers (`factq.worker.webhook_delivery`), so the API stays light and a
job's completion never waits for a receiver.
"""
