"""What the models need of the data: the training defaults, in one place.

`refund-risk data check` reads these to say which models the stored data can train and what is
missing. They are the defaults of `training/` (`plan_split`, `default_cutoff`, `train_tier_model`,
the `train` commands and the calibration's need for both classes), and a unit test holds the two
equal, so a change on either side shows.
"""

from __future__ import annotations

ABUSE_TEST_MONTHS = 3
"""Months at the end of the requests the abuse model is tested on (`train abuse`)."""

ABUSE_CALIBRATION_MONTHS = 2
"""Months before the test months used to calibrate the abuse model's probabilities."""

ABUSE_LABEL_DELAY_DAYS = 30
"""Days before the test months after which a calibration request's label may not yet be known."""

ABUSE_MIN_TRAIN_LABELLED = 1
"""Labelled requests the abuse model's train period needs (a label known by the test months)."""

ABUSE_MIN_CALIBRATION_PER_CLASS = 1
"""Abusive and not-abusive labelled requests, each, its calibration period needs."""

TIER_TEST_MONTHS = 2
"""Snapshot months with a closed target window the tier model is tested on (`train tier`)."""

TIER_CALIBRATION_MONTHS = 1
"""Closed snapshot months before the test months used to calibrate the tier model."""

CREDIT_TARGET_DAYS = 90
"""How far ahead of a monthly snapshot the tier model's target (a refund loss) looks."""

TIER_MIN_FIT_LOSSES = 1
"""Customer-months with a refund loss the tier model's fit months need."""
