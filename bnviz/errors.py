"""The one error type bnviz raises for an impossible request."""


class BnvizError(ValueError):
    """A request bnviz cannot satisfy; the message says what to change."""
