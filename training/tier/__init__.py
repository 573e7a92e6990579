"""The credit-tier model: a customer's probability of causing a refund loss in the next 90 days.

Trained on monthly customer snapshots (`features.batch.build_credit_snapshots`): one row per
customer and snapshot date, the customer and linked-account features as of that date, and a
target saying whether the customer caused a refund loss in the 90 days after the snapshot.

What counts as a loss (`LOSS_DEFINITIONS`). No shop knows its true losses; these are proxies:

* `kept` (the default whenever the data has such losses): a refund the latest outcome says was
  abusive (which is how a return whose goods never came back, or came back swapped, is
  recorded), or a refund-only claim on delivered goods, where the customer kept goods and money
  (`target_has_loss_90d` of the snapshots). Needs no outcome at all for the second kind.
* `refunds`: any refund request, returns and cancellations included: each costs the shop
  handling, shipping and the sale. The proxy of a shop whose export holds neither outcomes nor
  refund-only claims on delivered goods (cancellations and returns alone).

`auto` takes `kept` when the fit months hold such a loss, else `refunds`, and says which.

Tiers are shares of the shop's customers. The tiers file gives each tier a `share` of the scored
population; the cut-offs (each tier's upper score bound) are fitted at those percentiles of the
scores of the latest months the model was trained on (the calibration month, else the fit
months), stored with the model, and put in force by the service through `policy.tiers.with_bounds`.
The tier is then `policy.tiers.assign_tier` of the score, the one definition of it.

Time, and what was known when. A model fitted at `train_end` may learn only from snapshots whose
90-day target window had closed by then:

    snapshots: |-- fit --|-- calibration --|-- windows still open --|-- test (later months) --|
    dates:   first    calibration_start                       train_end <= test_start    data end

* fit and calibration: snapshots with `snapshot_at + 90 days <= train_end`. The snapshot
  column `target_window_complete` is measured against the end of the data, not the cutoff, so
  it cannot be used to choose training rows; the window is checked against `train_end` here.
  Calibration takes the latest of these snapshot months, the booster the earlier ones, so the
  probabilities are fitted on data later than the trees were.
* test: snapshots from `test_start` on whose window had closed by the end of the data (a
  window cut short by the data's end would undercount losses and flatter every tier).

Label delay, and the approximation taken. Targets are built from the final labels in the data,
not from the labels known at `train_end`. Most of a snapshot's loss is known the moment the
refund is requested (a refund-only claim never brings the goods back); the rest is abuse found
on returned goods, which the warehouse check reports within about two weeks, and a few later
findings (chargebacks, ring investigations). On the default world (seed 7, 20,000 customers),
with `train_end` 2025-09-01, 1 of the 836 loss refunds requested before the cutoff changes
between the labels known at the cutoff and the final ones. A strict version needs targets built
from `features.labels.labels_as_of(outcomes, train_end)` in the snapshot builder.

What `kept` counts on the generated world. Refund-only claims on delivered goods are most of
the losses; they follow how often a customer orders more than how far the customer can be
trusted, so among the lowest-scored customers the realised loss rate is nearly flat, and the two
best tiers are told apart by a few tenths of a percentage point.

New customers. A customer with no order before the snapshot date has nothing to be judged on: the
score is NaN (not a number the model made up), and `assign_tier` puts a missing score in the
default tier, as it does for customers absent from the snapshot.

Where each part lives: `loss` (the loss definitions), `inputs` (features read, monotone
directions), `model` (the estimator), `tiers` (scores to tiers, the fitted cut-offs), `split`
(months to fit, calibrate and test), `parts` (snapshot months cut down for streaming), `train`
(fit and evaluate), `evaluation` and `figures` (the test months' table, figures and oracle
agreement). `training.run_tier` runs it end to end with MLflow; `refund-risk train tier` is its
command line. The names below are the package's public surface.
"""

from training.tier.evaluation import (
    ABUSIVE_TYPES,
    HONEST_TYPE,
    LATENT_TYPES,
    OPPORTUNIST_TYPE,
    oracle_agreement,
    ordering_problem,
    rises_strictly,
    tier_table,
)
from training.tier.inputs import (
    HISTORY_FEATURE,
    MONOTONE,
    NOT_TIER_INPUTS,
    TIER_ENTITIES,
    monotone_constraints,
    tier_categorical_features,
    tier_feature_names,
)
from training.tier.loss import (
    LOSS_CHOICES,
    LOSS_DEFINITIONS,
    REFUND_REQUESTS,
    TARGET,
    choose_loss,
    loss_labels,
)
from training.tier.model import CreditTierModel
from training.tier.parts import (
    SnapshotPart,
    check_snapshot_columns,
    compact,
    feature_columns,
    join_parts,
    snapshot_part,
)
from training.tier.split import TierSplit, default_cutoff, history_needed, plan_tier_split
from training.tier.tiers import (
    customer_tiers,
    fit_cutoffs,
    has_history,
    score_customers,
    suggest_thresholds,
    tier_for,
    tiers_for,
    with_thresholds,
)
from training.tier.train import TierTrainingResult, train_tier_model, train_tier_parts

__all__ = [
    "ABUSIVE_TYPES",
    "HISTORY_FEATURE",
    "HONEST_TYPE",
    "LATENT_TYPES",
    "LOSS_CHOICES",
    "LOSS_DEFINITIONS",
    "MONOTONE",
    "NOT_TIER_INPUTS",
    "OPPORTUNIST_TYPE",
    "REFUND_REQUESTS",
    "TARGET",
    "TIER_ENTITIES",
    "CreditTierModel",
    "SnapshotPart",
    "TierSplit",
    "TierTrainingResult",
    "check_snapshot_columns",
    "choose_loss",
    "compact",
    "customer_tiers",
    "default_cutoff",
    "feature_columns",
    "fit_cutoffs",
    "has_history",
    "history_needed",
    "join_parts",
    "loss_labels",
    "monotone_constraints",
    "oracle_agreement",
    "ordering_problem",
    "plan_tier_split",
    "rises_strictly",
    "score_customers",
    "snapshot_part",
    "suggest_thresholds",
    "tier_categorical_features",
    "tier_feature_names",
    "tier_for",
    "tier_table",
    "tiers_for",
    "train_tier_model",
    "train_tier_parts",
    "with_thresholds",
]
