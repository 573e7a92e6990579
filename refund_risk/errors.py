"""The project's error hierarchy; only the serving layer maps these to HTTP status codes."""


class RefundRiskError(Exception):
    """Base class of every error the project raises on purpose."""


class ConfigurationError(RefundRiskError):
    """Settings or a configuration file are invalid; the message says which and why."""


class DataValidationError(RefundRiskError):
    """Input data does not match the raw schema."""


class NotFoundError(RefundRiskError):
    """A requested entity (file, table, record) does not exist."""
