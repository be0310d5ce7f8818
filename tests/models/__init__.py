"""Enhancement models: front-end, BSRNN, FlowSE, registry, checkpoint conversion and parity."""
