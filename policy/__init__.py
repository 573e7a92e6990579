"""The decision layer: a versioned, declarative policy file, its pure evaluator, and the simulator.

`policy.model` loads and validates the policy and credit-tier files, `policy.evaluate` decides
one request (or a whole frame of past requests), `policy.reasons` writes the reviewer's reasons,
`policy.simulate` prices a policy on past requests and `policy.tune` searches its thresholds.
"""
