"""The decision layer: a versioned, declarative policy file, its pure evaluator, and the simulator.

From the bottom up: `policy.vocabulary` names the actions and the request fields rules may test;
`policy.documents` reads the files against their schema; `policy.tiers` validates the credit
tiers and places a customer in one; `policy.conditions` compiles a rule's `when` and says what
each test means; `policy.reachability` finds rules that can never fire; `policy.templates`
parses and fills reason and message templates; `policy.model` validates a whole policy. Then
`policy.context` is a request as rules see it, `policy.evaluate` decides one request or a whole
frame of past requests from one definition, `policy.lenience` checks a policy's direction,
`policy.reasons` writes the reviewer's reasons, `policy.simulate` prices a policy on past
requests and `policy.tune` searches its thresholds.
"""
