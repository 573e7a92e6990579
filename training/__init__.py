"""Datasets with label delay, the refund-abuse and credit-tier models, evaluation, registry."""
