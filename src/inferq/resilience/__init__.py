"""How provider calls survive failure: one retry policy and a shared circuit breaker."""
