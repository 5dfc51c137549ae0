"""What a monitoring stack reads: Prometheus metrics (:mod:`.metrics`), made from the events
every run emits."""
