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
