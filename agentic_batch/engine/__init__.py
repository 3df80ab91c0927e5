"""The engine: executor process lifecycle, leases and heartbeats, the async pool, retries, timeouts.

It knows no agent's wire format (that is `workers`) and no SQL (that is `store`).
"""
