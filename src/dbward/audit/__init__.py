"""The audit trail: event catalogue, hash-chained journal, store, forwarders, verification."""
