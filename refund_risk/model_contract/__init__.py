"""The model contract: what training writes and the service reads, owned by neither.

A registered model version carries, besides MLflow's own model, a scoring folder: the booster's
text file and a JSON card (`card`): its features and their version, the Platt calibration, the
contribution tables that give reasons (`explain`), the training distributions drift is measured
against (`drift`) and, for the credit-tier model, its cut-offs. Training fits and writes them;
the service and the dashboard read them. Neither side's code is imported by the other, and
importing this package imports no MLflow: the registry client is made only when a card is
fetched.
"""
