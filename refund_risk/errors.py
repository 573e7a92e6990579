"""The project's error hierarchy; only the serving layer maps these to HTTP status codes."""


class RefundRiskError(Exception):
    """Base class of every error the project raises on purpose."""


class ConfigurationError(RefundRiskError):
    """Settings or a configuration file are invalid; the message says which and why."""


class DataValidationError(RefundRiskError):
    """Input data does not match the raw schema."""


class NotFoundError(RefundRiskError):
    """A requested entity (file, table, record) does not exist."""


class ImportRejectedError(DataValidationError):
    """An import whose tables were all read but could not be stored as a whole.

    `summary` is the import's per-table summary (rows read, accepted, rejected and why), so a
    caller can show what went wrong beside the one-sentence message.
    """

    def __init__(self, message: str, summary: str) -> None:
        super().__init__(message)
        self.summary = summary


class FieldsError(RefundRiskError):
    """An error about named fields of a request: `fields` holds (field, message, kind) for
    each, the field as the caller names it (`order.amount`, `orders.3.customer_id`)."""

    def __init__(self, message: str, fields: list[tuple[str, str, str]]) -> None:
        super().__init__(message)
        self.fields = fields


class InvalidFieldsError(FieldsError, DataValidationError):
    """Fields that are each well-formed but together break a rule (an amount above the
    order's, a stage the order's times contradict, a time in the future)."""


class FactConflictError(FieldsError):
    """A request contradicts what is already recorded and may not change it (an order of
    another customer, an order's fixed facts)."""


class IdempotencyConflictError(FieldsError):
    """A refund id that was already used for a different request; `fields` names what
    differs, and nothing of the stored decision."""
